"""Reads for the registry, with access rules applied: an object the caller may not see does not exist."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from app.accounts.models import Role, User
from app.core.errors import NotFound

from .models import MlModel, ModelVersion, StageChange, Visibility


def _visible(user: User) -> Q:
    if user.has_role(Role.ADMIN):
        return Q()
    return (
        Q(owner=user)
        | Q(visibility=Visibility.PUBLIC)
        | Q(visibility=Visibility.SHARED, shared_with=user)
    )


def model_list(*, user: User) -> QuerySet[MlModel]:
    return MlModel.objects.filter(_visible(user)).select_related("owner").distinct().order_by("name")


def model_get(*, user: User, name: str) -> MlModel:
    """The model if ``user`` may read it; NotFound otherwise, the same as for a name that does not exist."""
    model = MlModel.objects.filter(_visible(user), name=name).select_related("owner").distinct().first()
    if model is None:
        raise NotFound(f"model {name!r} not found")
    return model


def model_can_manage(*, user: User, model: MlModel) -> bool:
    return user.has_role(Role.ADMIN) or (model.owner_id == user.pk and user.has_role(Role.MAINTAINER))


def model_version_list(*, model: MlModel) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(model=model).order_by("number")


def model_version_get(*, model: MlModel, number: int) -> ModelVersion:
    version = ModelVersion.objects.filter(model=model, number=number).first()
    if version is None:
        raise NotFound(f"model {model.name!r} has no version {number}")
    return version


def model_shared_usernames(*, model: MlModel) -> list[str]:
    return list(model.shared_with.order_by("username").values_list("username", flat=True))


def model_history(*, model: MlModel, limit: int = 100) -> QuerySet[StageChange]:
    """The model's stage changes, newest first."""
    return (StageChange.objects.filter(model=model).select_related("version", "actor").order_by("-id")[:limit])
