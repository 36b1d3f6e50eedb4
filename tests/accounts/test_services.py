"""app/accounts services and selectors, called directly: users, API keys, JWT pairs and tickets."""

from __future__ import annotations

import hashlib
import stat

import pytest

from app.accounts import auth_cache
from app.accounts.models import ApiKey, Role, User
from app.accounts.selectors import api_key_list
from app.accounts.services import (
    Principal,
    access_token_authenticate,
    admin_ensure,
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    credential_authenticate,
    token_obtain,
    token_refresh,
    token_revoke,
    user_create,
)
from app.accounts.tickets import ticket_issue, ticket_redeem
from app.core.errors import Invalid, NotFound, Unauthorized
from tests.service_support import new_user, unique


@pytest.mark.django_db
def test_user_create_refuses_a_bad_or_taken_name_and_writes_nothing():
    for bad in ("has space", "x\n", ""):
        with pytest.raises(Invalid) as caught:
            user_create(username=bad, password="pw")
        assert caught.value.details == [{"loc": ["username"], "msg": "invalid"}]
    name = unique("taken")
    user_create(username=name, password="pw")
    with pytest.raises(Invalid, match="already exists"):
        user_create(username=name, password="other")
    assert User.objects.filter(username=name).count() == 1
    assert not User.objects.filter(username__in=["has space", "x\n"]).exists()


@pytest.mark.django_db
def test_user_create_refuses_a_name_longer_than_the_column():
    with pytest.raises(Invalid):
        user_create(username="a" * 151, password="pw")
    user_create(username="a" * 150, password="pw")
    assert User.objects.filter(username="a" * 150).exists()


@pytest.mark.django_db
def test_roles_passwords_and_admin_flags():
    admin = new_user(Role.ADMIN, password="s3cret")
    member = new_user(Role.MEMBER)
    keyless = user_create(username=unique("nopw"), password=None)
    assert admin.is_staff and admin.is_superuser and admin.check_password("s3cret")
    assert not member.is_staff and not member.is_superuser
    assert not keyless.has_usable_password()
    assert admin.has_role(Role.MAINTAINER) and member.has_role(Role.VIEWER) and not member.has_role(Role.MAINTAINER)


@pytest.mark.django_db
def test_admin_ensure_creates_one_admin_with_a_private_password_file(tmp_path):
    User.objects.filter(role=Role.ADMIN).delete()
    User.objects.filter(is_superuser=True).delete()
    path = tmp_path / "secrets" / "admin-password"
    password = admin_ensure(password_file=path)
    assert password is not None and path.read_text().strip() == password
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    admin = User.objects.get(username="admin")
    assert admin.role == Role.ADMIN and admin.check_password(password)
    assert admin_ensure(password_file=tmp_path / "again") is None
    assert not (tmp_path / "again").exists()


@pytest.mark.django_db
def test_an_api_key_authenticates_until_revoked_and_only_its_hash_is_kept():
    user = new_user()
    key, raw = api_key_create(user=user, name="ci")
    assert raw.startswith(f"tw_{key.prefix}_")
    secret = raw.split("_")[2]
    assert key.secret_hash == hashlib.sha256(secret.encode()).hexdigest() and secret not in key.secret_hash
    principal = api_key_authenticate(raw=raw)
    assert (principal.user.pk, principal.via, principal.expires_at) == (user.pk, "api_key", None)
    assert ApiKey.objects.get(pk=key.pk).last_used_at is not None
    assert credential_authenticate(raw=raw).user.pk == user.pk
    for wrong, message in ((f"tw_{key.prefix}_{'0' * 48}", "invalid API key"), ("tw_x", "malformed"),
                           ("tw_nope_nope", "invalid API key")):
        with pytest.raises(Unauthorized, match=message):
            api_key_authenticate(raw=wrong)
    api_key_revoke(user=user, prefix=key.prefix)
    with pytest.raises(Unauthorized, match="revoked"):
        api_key_authenticate(raw=raw)


@pytest.mark.django_db
def test_only_the_owner_revokes_a_key_and_the_cache_forgets_on_commit(django_capture_on_commit_callbacks):
    owner, other = new_user(), new_user()
    key, raw = api_key_create(user=owner)
    with pytest.raises(NotFound):
        api_key_revoke(user=other, prefix=key.prefix)
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None
    assert api_key_authenticate(raw=raw).user.pk == owner.pk
    auth_cache._entries[b"primed"] = object()  # type: ignore[assignment]  # a principal this process cached
    with django_capture_on_commit_callbacks() as callbacks:
        revoked = api_key_revoke(user=owner, prefix=key.prefix)
        assert b"primed" in auth_cache._entries, "dropped before the commit"
    assert revoked.revoked_at is not None
    assert callbacks, "update() sends no signal: the service must drop cached principals on commit"
    for callback in callbacks:
        callback()
    assert b"primed" not in auth_cache._entries
    with pytest.raises(NotFound):
        api_key_revoke(user=owner, prefix=key.prefix)  # twice


@pytest.mark.django_db
def test_api_key_list_shows_the_users_own_active_keys():
    user, other = new_user(), new_user()
    kept, _ = api_key_create(user=user, name="kept")
    gone, _ = api_key_create(user=user, name="gone")
    api_key_create(user=other)
    api_key_revoke(user=user, prefix=gone.prefix)
    assert [k.pk for k in api_key_list(user=user)] == [kept.pk]
    assert {k.pk for k in api_key_list(user=user, active_only=False)} == {kept.pk, gone.pk}


@pytest.mark.django_db
def test_an_inactive_user_authenticates_with_nothing():
    user = new_user(password="pw")
    _, raw = api_key_create(user=user)
    pair = token_obtain(username=user.username, password="pw")
    User.objects.filter(pk=user.pk).update(is_active=False)
    for credential in (raw, pair.access):
        with pytest.raises(Unauthorized):
            credential_authenticate(raw=credential)
    with pytest.raises(Unauthorized):
        token_obtain(username=user.username, password="pw")
    with pytest.raises(Unauthorized):
        token_refresh(refresh=pair.refresh)


@pytest.mark.django_db
def test_tokens_obtain_refresh_once_and_revoke():
    user = new_user(password="pw")
    with pytest.raises(Unauthorized):
        token_obtain(username=user.username, password="wrong")
    pair = token_obtain(username=user.username, password="pw")
    principal = access_token_authenticate(raw=pair.access)
    assert principal.user.pk == user.pk and principal.via == "jwt" and principal.expires_at is not None
    assert User.objects.get(pk=user.pk).last_login is not None
    with pytest.raises(Unauthorized):
        access_token_authenticate(raw=pair.refresh)  # a refresh token is not an access token
    with pytest.raises(Unauthorized):
        token_refresh(refresh=pair.access)
    rotated = token_refresh(refresh=pair.refresh)
    assert access_token_authenticate(raw=rotated.access).user.pk == user.pk
    with pytest.raises(Unauthorized, match="blacklisted"):
        token_refresh(refresh=pair.refresh)  # exactly once
    token_revoke(refresh=rotated.refresh)
    with pytest.raises(Unauthorized):
        token_refresh(refresh=rotated.refresh)
    with pytest.raises(Unauthorized):
        token_revoke(refresh=rotated.refresh)


async def test_a_ticket_is_redeemed_once():
    principal = Principal(user=User(pk=4242, username="ticket-holder"), expires_at=None, via="jwt")
    ticket = await ticket_issue(principal=principal)
    claim = await ticket_redeem(ticket=ticket)
    assert claim is not None and (claim.user_id, claim.expires_at) == (4242, None)
    assert await ticket_redeem(ticket=ticket) is None
    assert await ticket_redeem(ticket="") is None and await ticket_redeem(ticket="x" * 129) is None
