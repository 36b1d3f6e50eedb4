from __future__ import annotations

from django.db.models import QuerySet

from app.accounts.models import Role, User
from app.core.errors import NotFound

from .models import Dataset


def dataset_list(*, user: User) -> QuerySet[Dataset]:
    qs = Dataset.objects.select_related("owner")
    return qs if user.has_role(Role.ADMIN) else qs.filter(owner=user)


def dataset_get(*, user: User, dataset_id: int) -> Dataset:
    """The dataset if ``user`` owns it (or is admin); NotFound otherwise, as for an id that does not exist."""
    dataset = dataset_list(user=user).filter(pk=dataset_id).first()
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} not found")
    return dataset
