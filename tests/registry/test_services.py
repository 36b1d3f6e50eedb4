"""app/registry services and selectors, called directly: who may change a model, version numbering,
promotion and rollback with their history rows, and the events and hooks that follow a commit."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from app.accounts.models import Role, User
from app.core import invalidation
from app.core.errors import Conflict, Forbidden, Invalid, NotFound
from app.registry.models import MlModel, ModelVersion, Stage, StageChange, Visibility
from app.registry.selectors import model_get, model_history, model_list, model_shared_usernames, model_version_get
from app.registry.services import (
    manifest_parse,
    model_create,
    model_rollback,
    model_update,
    model_version_create,
    model_version_promote,
)
from tests.service_support import fresh_relay, new_user, published_events, unique, written_events

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures(fresh_relay.__name__)]


@pytest.fixture
def promotions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int | None]]:
    """What the serving layer's promotion hook hears."""
    heard: list[tuple[str, int | None]] = []
    monkeypatch.setitem(invalidation._listeners, invalidation.MODEL, [lambda key: heard.append(key)])
    return heard


def make_model(owner: User, visibility: str = Visibility.PRIVATE) -> MlModel:
    return model_create(owner=owner, name=unique("m"), visibility=visibility)


def add_version(model: MlModel, actor: User, **extra: Any) -> ModelVersion:
    return model_version_create(model=model, actor=actor, fmt="safetensors", architecture="mlp",
                                config={"in_features": 2}, signature={"inputs": [], "outputs": []},
                                artifact_key=f"models/{model.name}/{unique('a')}.safetensors", artifact_sha256="0" * 64,
                                artifact_size=1, **extra)


def stages(model: MlModel) -> dict[int, str]:
    return dict(ModelVersion.objects.filter(model=model).values_list("number", "stage"))


def test_model_create_checks_role_name_visibility_and_uniqueness():
    maintainer = new_user(Role.MAINTAINER)
    with pytest.raises(Forbidden):
        model_create(owner=new_user(Role.MEMBER), name=unique("m"))
    for bad in ("Upper", "-lead", "x\n", "a" * 65, ""):
        with pytest.raises(Invalid) as caught:
            model_create(owner=maintainer, name=bad)
        assert caught.value.details[0]["field"] == "name"
    with pytest.raises(Invalid, match="visibility"):
        model_create(owner=maintainer, name=unique("m"), visibility="everyone")
    model = make_model(maintainer)
    with pytest.raises(Conflict, match="already exists"):
        model_create(owner=new_user(Role.ADMIN), name=model.name)
    assert MlModel.objects.filter(name=model.name).count() == 1


def test_only_the_owning_maintainer_or_an_admin_changes_settings(django_capture_on_commit_callbacks, promotions):
    owner, other = new_user(Role.MAINTAINER), new_user(Role.MAINTAINER)
    model = make_model(owner)
    with pytest.raises(Forbidden):
        model_update(model=model, actor=other, changes={"max_batch_size": 8})
    with django_capture_on_commit_callbacks(execute=True):
        model_update(model=model, actor=new_user(Role.ADMIN), changes={"max_batch_size": 8})
    assert MlModel.objects.get(pk=model.pk).max_batch_size == 8
    assert promotions == [(model.name, None)], "a settings change reaches the serving hook after its commit"


def test_invalid_settings_change_nothing_and_name_every_field():
    owner = new_user(Role.MAINTAINER)
    model = make_model(owner)
    changes = {"max_batch_size": 0, "max_delay_ms": 5000, "timeout_ms": 1.5, "device": "tpu",
               "dispatch_policy": "fastest", "target_p99_ms": 0, "visibility": "everyone", "sharing": ["nobody-here"],
               "description": "kept out"}
    with pytest.raises(Invalid) as caught:
        model_update(model=model, actor=owner, changes=changes)
    fields = [d["field"] for d in caught.value.details]
    assert sorted(fields) == sorted(["max_batch_size", "max_delay_ms", "timeout_ms", "device", "dispatch_policy",
                                     "target_p99_ms", "visibility", "sharing"])
    fresh = MlModel.objects.get(pk=model.pk)
    assert (fresh.max_batch_size, fresh.description, fresh.device) == (32, "", "auto")


def test_update_applies_settings_and_sharing_decides_who_sees_the_model():
    owner, reader, outsider, admin = (new_user(Role.MAINTAINER), new_user(), new_user(), new_user(Role.ADMIN))
    model = make_model(owner)
    with pytest.raises(NotFound):
        model_get(user=reader, name=model.name)
    updated = model_update(model=model, actor=owner, changes={
        "visibility": Visibility.SHARED, "sharing": [reader.username], "dispatch_policy": "default",
        "target_p99_ms": 25, "max_delay_ms": 2.5, "timeout_ms": 100.0})
    assert (updated.dispatch_policy, updated.target_p99_ms, updated.max_delay_ms, updated.timeout_ms) == (
        "", 25.0, 2.5, 100)
    assert model_shared_usernames(model=model) == [reader.username]
    assert model_get(user=reader, name=model.name).pk == model.pk
    with pytest.raises(NotFound):
        model_get(user=outsider, name=model.name)
    assert model.pk in {m.pk for m in model_list(user=admin)} and model.pk not in {m.pk for m in
                                                                                   model_list(user=outsider)}
    model_update(model=model, actor=owner, changes={"target_p99_ms": None, "visibility": Visibility.PUBLIC})
    assert MlModel.objects.get(pk=model.pk).target_p99_ms is None
    assert model_get(user=outsider, name=model.name).pk == model.pk


def test_versions_are_numbered_and_a_job_registers_its_version_once(django_capture_on_commit_callbacks):
    member = new_user(Role.MEMBER)
    owner = new_user(Role.MAINTAINER)
    model = make_model(owner)
    with django_capture_on_commit_callbacks(execute=True):
        assert [add_version(model, owner).number for _ in range(2)] == [1, 2]
    assert published_events(f"model:{model.name}") == [
        ("version_created", {"model": model.name, "version": n, "format": "safetensors"}) for n in (1, 2)]
    with pytest.raises(Forbidden):
        add_version(model, member)  # an upload needs the owner's maintainer role
    with pytest.raises(Forbidden):
        add_version(model, member, source_job_id=1)  # a job only registers on its owner's models
    members_model = MlModel.objects.create(name=unique("m"), owner=member)
    first = add_version(members_model, member, source_job_id=987_654)
    again = add_version(members_model, member, source_job_id=987_654)
    assert again.pk == first.pk and ModelVersion.objects.filter(model=members_model).count() == 1
    with pytest.raises(NotFound):
        model_version_get(model=model, number=3)


def test_promotion_keeps_one_production_version_and_records_each_change(django_capture_on_commit_callbacks,
                                                                        promotions):
    owner = new_user(Role.MAINTAINER)
    model = make_model(owner)
    v1, v2 = add_version(model, owner), add_version(model, owner)
    with pytest.raises(Invalid):
        model_version_promote(version=v1, stage="live", actor=owner)
    with pytest.raises(Forbidden):
        model_version_promote(version=v1, stage=Stage.PRODUCTION, actor=new_user(Role.MAINTAINER))
    with django_capture_on_commit_callbacks(execute=True):
        model_version_promote(version=v1, stage=Stage.PRODUCTION, actor=owner, reason="first")
        model_version_promote(version=v2, stage=Stage.PRODUCTION, actor=owner)
    assert stages(model) == {1: Stage.ARCHIVED, 2: Stage.PRODUCTION}
    history = [(c.version.number, c.from_stage, c.to_stage, c.action) for c in model_history(model=model)]
    assert history == [(2, "none", "production", "promote"), (1, "production", "archived", "replaced"),
                       (1, "none", "production", "promote")]
    assert promotions == [(model.name, 1), (model.name, 2)]
    promoted = [data for type_, data in published_events(f"model:{model.name}") if type_ == "promoted"]
    assert [(d["version"], d["from_stage"], d["actor"], d["reason"]) for d in promoted] == [
        (1, "none", owner.username, "first"), (2, "none", owner.username, "")]


def test_a_job_may_promote_on_its_owners_model_whatever_the_role():
    member = new_user(Role.MEMBER)
    model = MlModel.objects.create(name=unique("m"), owner=member)
    version = add_version(model, member, source_job_id=876_543, stage=Stage.PRODUCTION)
    assert version.stage == Stage.PRODUCTION
    assert StageChange.objects.get(model=model).reason == "requested by training job 876543"


def test_rollback_restores_the_previous_production_version(django_capture_on_commit_callbacks, promotions):
    owner = new_user(Role.MAINTAINER)
    model = make_model(owner)
    v1, v2 = add_version(model, owner), add_version(model, owner)
    with pytest.raises(Conflict):
        model_rollback(model=model, actor=owner)
    model_version_promote(version=v1, stage=Stage.PRODUCTION, actor=owner)
    with pytest.raises(Conflict):
        model_rollback(model=model, actor=owner)  # nothing before version 1
    model_version_promote(version=v2, stage=Stage.PRODUCTION, actor=owner)
    with pytest.raises(Forbidden):
        model_rollback(model=model, actor=new_user(Role.MAINTAINER))
    with django_capture_on_commit_callbacks(execute=True):
        restored, previous = model_rollback(model=model, actor=owner)
    assert (restored.number, previous and previous.number) == (1, 2)
    assert stages(model) == {1: Stage.PRODUCTION, 2: Stage.ARCHIVED}
    assert promotions[-1] == (model.name, 1)
    assert written_events(f"model:{model.name}")[-1] == ("rolled_back", {
        "model": model.name, "version": 1, "from_version": 2, "actor": owner.username,
        "reason": "rollback from version 2"})


def test_a_rolled_back_promotion_leaves_no_trace(django_capture_on_commit_callbacks, promotions):
    owner = new_user(Role.MAINTAINER)
    model = make_model(owner)
    version = add_version(model, owner)
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            model_version_promote(version=version, stage=Stage.PRODUCTION, actor=owner)
            raise RuntimeError("the request fails after promoting")
    assert stages(model) == {1: Stage.NONE}
    assert not StageChange.objects.filter(model=model).exists()
    assert promotions == [] and [t for t, _ in written_events(f"model:{model.name}")] == ["version_created"]


def test_manifest_parse_refuses_what_it_cannot_load_safely():
    cases = {
        "{": "not valid JSON",
        "[]": "must be a JSON object",
        '{"format": "pickle"}': "Pickle",
        '{"format": "safetensors"}': "needs an architecture",
        '{"format": "safetensors", "architecture": "mlp", "extra": 1}': "unknown keys",
        '{"format": "torchscript", "config": [1]}': "config must be an object",
        '{"format": "torchscript"}': "signature is required",
    }
    for raw, message in cases.items():
        with pytest.raises(Invalid, match=message):
            manifest_parse(raw)
    parsed = manifest_parse('{"architecture": "mlp", "config": {"in_features": 4, "hidden": [8], "out_features": 3}}')
    assert parsed["format"] == "safetensors" and parsed["signature"]["inputs"]


def test_a_model_visible_two_ways_is_listed_once_and_history_is_bounded():
    owner, reader = new_user(Role.MAINTAINER), new_user()
    model = make_model(owner, visibility=Visibility.PUBLIC)
    model_update(model=model, actor=owner, changes={"sharing": [reader.username, owner.username]})
    assert [m.pk for m in model_list(user=reader)].count(model.pk) == 1
    version = add_version(model, owner)
    for stage in (Stage.STAGING, Stage.PRODUCTION, Stage.ARCHIVED):
        model_version_promote(version=version, stage=stage, actor=owner)
    assert [c.to_stage for c in model_history(model=model, limit=2)] == [Stage.ARCHIVED, Stage.PRODUCTION]
