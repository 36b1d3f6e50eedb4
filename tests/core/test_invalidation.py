"""app/core/invalidation.py and the services that drop per-process caches through it: in this process,
without a server. Each change reaches its cache when the transaction commits, and not before."""

import pytest

from app.accounts import auth_cache
from app.accounts.models import Role
from app.accounts.services import api_key_create, api_key_revoke, user_create
from app.core import invalidation
from app.monitoring.recording import recorder
from app.monitoring.services import monitoring_config_update
from app.registry.models import Visibility
from app.registry.services import model_create, model_update

pytestmark = pytest.mark.django_db


@pytest.fixture
def heard():
    """What the listeners of a private cache name hear."""
    got: list[object] = []
    invalidation.on_change("test-cache", got.append)
    yield got
    invalidation._listeners.pop("test-cache", None)


def test_listeners_run_on_commit_only(heard, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        invalidation.changed_on_commit("test-cache", ("m", 2))
        assert heard == []  # not before the commit
    assert heard == [("m", 2)]


def test_registering_twice_is_one_listener(heard):
    invalidation.on_change("test-cache", heard.append)
    invalidation.changed("test-cache", 1)
    assert heard == [1]


def test_revoking_a_key_drops_cached_principals_at_commit(django_capture_on_commit_callbacks):
    user = user_create(username="inv-keys", password=None, role=Role.MAINTAINER)
    key, _raw = api_key_create(user=user)
    generation = auth_cache._generation
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        api_key_revoke(user=user, prefix=key.prefix)
    assert auth_cache._generation == generation
    for callback in callbacks:
        callback()
    assert auth_cache._generation != generation


def test_a_model_change_reaches_the_serving_catalog(django_capture_on_commit_callbacks):
    heard: list[object] = []
    invalidation.on_change(invalidation.MODEL, heard.append)
    try:
        owner = user_create(username="inv-model", password=None, role=Role.MAINTAINER)
        model = model_create(owner=owner, name="inv-model", visibility=Visibility.PRIVATE)
        with django_capture_on_commit_callbacks(execute=True):
            model_update(model=model, actor=owner, changes={"description": "changed"})
        assert ("inv-model", None) in heard
    finally:
        invalidation._listeners[invalidation.MODEL].remove(heard.append)


def test_a_sample_rate_change_reaches_the_recorder(django_capture_on_commit_callbacks):
    owner = user_create(username="inv-rate", password=None, role=Role.MAINTAINER)
    model = model_create(owner=owner, name="inv-rate", visibility=Visibility.PRIVATE)
    with django_capture_on_commit_callbacks(execute=True):
        monitoring_config_update(model=model, actor=owner, changes={"sample_rate": 0.25})
    assert recorder._rates[model.pk] == 0.25
    with django_capture_on_commit_callbacks(execute=True):
        monitoring_config_update(model=model, actor=owner, changes={"sample_rate": None})
    assert model.pk not in recorder._rates
