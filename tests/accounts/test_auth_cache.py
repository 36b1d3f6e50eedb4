"""The per-process principal cache in front of credential checks (app/accounts/auth_cache.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from app.accounts import auth_cache, services
from app.accounts.models import ApiKey, User
from app.core.db import db_async
from app.core.errors import Unauthorized
from tests.support import make_jwt

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The credentials that reached the database check, in order."""
    seen: list[str] = []

    def counted(*, raw: str) -> services.Principal:
        seen.append(raw)
        return services.credential_authenticate(raw=raw)

    monkeypatch.setattr(auth_cache, "credential_authenticate", counted)
    return seen


@pytest.fixture
def member(make_user: Callable[..., Any]) -> User:
    account = make_user("member")
    return User(pk=account.pk, username=account.username)


async def _key(user: User) -> tuple[str, str]:
    key, raw = await db_async(services.api_key_create)(user=user)
    return raw, key.prefix


async def test_a_cached_credential_needs_no_database(member, django_db_blocker, checks):
    raw, _ = await _key(member)
    token = make_jwt(member.pk)
    for credential, via in ((raw, "api_key"), (token, "jwt")):
        first = await auth_cache.authenticate(credential)
        assert first.user.pk == member.pk and first.via == via
        with django_db_blocker.block():
            again = await auth_cache.authenticate(credential)
        assert again.user.pk == member.pk and again.via == via
    assert checks == [raw, token]


async def test_concurrent_misses_share_one_check(member, checks):
    raw, _ = await _key(member)
    principals = await asyncio.gather(*(auth_cache.authenticate(raw) for _ in range(20)))
    assert {p.user.pk for p in principals} == {member.pk}
    assert len(checks) == 1


async def test_wrong_credentials_are_refused_and_never_cached(member, checks):
    raw, _ = await _key(member)
    wrong = raw[:-1] + ("0" if raw[-1] != "0" else "1")
    for bad in (wrong, wrong, "tw_nokey_000", make_jwt(member.pk, key="k" * 64), "garbage"):
        with pytest.raises(Unauthorized):
            await auth_cache.authenticate(bad)
    assert len(checks) == 5
    assert (await auth_cache.authenticate(raw)).user.pk == member.pk


async def test_revoking_a_key_through_the_service_refuses_it_at_once(member):
    raw, prefix = await _key(member)
    await auth_cache.authenticate(raw)
    await db_async(services.api_key_revoke)(user=member, prefix=prefix)
    with pytest.raises(Unauthorized, match="revoked"):
        await auth_cache.authenticate(raw)


async def test_deactivating_or_demoting_a_user_applies_at_once(member):
    raw, _ = await _key(member)
    token = make_jwt(member.pk)
    assert (await auth_cache.authenticate(token)).user.role == "member"

    def change(**fields: Any) -> None:
        user = User.objects.get(pk=member.pk)
        for name, value in fields.items():
            setattr(user, name, value)
        user.save()  # as the Django admin does

    await db_async(change)(role="viewer")
    assert (await auth_cache.authenticate(token)).user.role == "viewer"
    assert (await auth_cache.authenticate(raw)).user.role == "viewer"
    await db_async(change)(is_active=False)
    for credential in (token, raw):
        with pytest.raises(Unauthorized, match="inactive"):
            await auth_cache.authenticate(credential)


async def test_deleting_a_key_row_refuses_it_at_once(member):
    raw, prefix = await _key(member)
    await auth_cache.authenticate(raw)
    await db_async(lambda: ApiKey.objects.get(prefix=prefix).delete())()
    with pytest.raises(Unauthorized):
        await auth_cache.authenticate(raw)


async def test_a_check_that_overlaps_a_revocation_is_not_cached(member, monkeypatch):
    raw, _ = await _key(member)
    calls = 0

    def revoked_meanwhile(*, raw: str) -> services.Principal:
        nonlocal calls
        calls += 1
        principal = services.credential_authenticate(raw=raw)
        auth_cache.forget_all()  # a revocation commits after the row was read
        return principal

    monkeypatch.setattr(auth_cache, "credential_authenticate", revoked_meanwhile)
    await auth_cache.authenticate(raw)
    await auth_cache.authenticate(raw)
    assert calls == 2


async def test_an_expired_token_is_not_served_from_the_cache(member, django_db_blocker):
    token = make_jwt(member.pk, lifetime=2)
    exp = int(time.time()) + 2
    await auth_cache.authenticate(token)
    with django_db_blocker.block():
        await auth_cache.authenticate(token)  # still valid: from the cache
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.2)
    with pytest.raises(Unauthorized, match="expired"):
        await auth_cache.authenticate(token)


async def test_zero_seconds_disables_the_cache(member, settings, checks):
    settings.AUTH_CACHE_SECONDS = 0
    raw, prefix = await _key(member)
    await auth_cache.authenticate(raw)
    await auth_cache.authenticate(raw)
    assert len(checks) == 2
    # Even a revocation that sends no signal and clears nothing is seen at once.
    await db_async(lambda: ApiKey.objects.filter(prefix=prefix).update(revoked_at="2020-01-01T00:00:00Z"))()
    with pytest.raises(Unauthorized, match="revoked"):
        await auth_cache.authenticate(raw)


async def test_entries_live_only_as_long_as_the_setting_says(member, settings, checks):
    settings.AUTH_CACHE_SECONDS = 0.3
    raw, _ = await _key(member)
    await auth_cache.authenticate(raw)
    await auth_cache.authenticate(raw)
    assert len(checks) == 1
    await asyncio.sleep(0.4)
    await auth_cache.authenticate(raw)
    assert len(checks) == 2
