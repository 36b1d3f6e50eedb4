"""Writes for accounts: users, API keys and JWT pairs. Plain sync functions; callers on the event loop
wrap each call in one ``sync_to_async`` so a service's queries share one thread and transaction."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.contrib.auth import authenticate
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from ninja_jwt.exceptions import TokenError
from ninja_jwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from ninja_jwt.tokens import RefreshToken

from app.core import invalidation
from app.core.errors import Invalid, NotFound, Unauthorized

from .models import ApiKey, Role, User
from .tokens import CheckedAccessToken, CheckedRefreshToken

API_KEY_PREFIX_LEN = 8
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class TokenPair:
    access: str
    refresh: str


@dataclass(frozen=True)
class Principal:
    """Who is calling and until when the credential holds (None: until revoked, as for API keys)."""

    user: User
    expires_at: datetime | None
    via: str  # "jwt" | "api_key" | "ticket"


def user_create(*, username: str, password: str | None, role: Role | str = Role.MEMBER, email: str = "") -> User:
    try:  # the model's own validator (full match, `\Z`), which only forms run: a name is a topic key too
        User.username_validator(username)
    except ValidationError as exc:
        raise Invalid(f"invalid username {username!r}: {exc.messages[0]}",
                      details=[{"loc": ["username"], "msg": "invalid"}]) from exc
    limit = User._meta.get_field("username").max_length or 150
    if len(username) > limit:
        raise Invalid(f"a username has at most {limit} characters",
                      details=[{"loc": ["username"], "msg": f"at most {limit} characters"}])
    if User.objects.filter(username=username).exists():
        raise Invalid(f"user {username!r} already exists", details=[{"loc": ["username"], "msg": "taken"}])
    user = User(username=username, email=email, role=Role(role))
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    if user.role == Role.ADMIN:
        user.is_staff = True
        user.is_superuser = True
    user.save()
    return user


def admin_ensure(*, password_file: Path) -> str | None:
    """Creates the first ``admin`` user when no admin exists; returns its one-time password, else None.

    The password is written to ``password_file`` with mode 600 before the row commits, so a crash between
    the two leaves a readable password rather than an admin nobody can log in as.
    """
    with transaction.atomic():
        if User.objects.filter(role=Role.ADMIN).exists() or User.objects.filter(is_superuser=True).exists():
            return None
        password = secrets.token_urlsafe(18)
        password_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = password_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, password_file)
        user_create(username="admin", password=password, role=Role.ADMIN)
    return password


def _hash_secret(secret: str) -> str:
    # API key secrets carry 190+ bits of entropy, so a fast digest is enough (as GitHub and Stripe do);
    # a slow KDF would only add latency to every inference call.
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_create(*, user: User, name: str = "") -> tuple[ApiKey, str]:
    """Returns the row and the full key; the key is never retrievable again."""
    for _ in range(5):
        prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(API_KEY_PREFIX_LEN))
        secret = secrets.token_hex(24)
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(user=user, name=name, prefix=prefix, secret_hash=_hash_secret(secret))
        except IntegrityError:
            continue
        return key, f"tw_{prefix}_{secret}"
    raise RuntimeError("could not allocate a unique API key prefix")


def _forget_principals_on_commit() -> None:
    """This process's cached principals go when the change commits (``update()`` sends no signal)."""
    invalidation.changed_on_commit(invalidation.CREDENTIALS)


def api_key_revoke(*, user: User, prefix: str) -> ApiKey:
    updated = ApiKey.objects.filter(user=user, prefix=prefix, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if not updated:
        raise NotFound("API key not found")
    _forget_principals_on_commit()
    return ApiKey.objects.get(user=user, prefix=prefix)


def api_key_authenticate(*, raw: str) -> Principal:
    parts = raw.split("_")
    if len(parts) != 3 or parts[0] != "tw":
        raise Unauthorized("malformed API key")
    _, prefix, secret = parts
    key = ApiKey.objects.select_related("user").filter(prefix=prefix).first()
    if key is None or not hmac.compare_digest(key.secret_hash, _hash_secret(secret)):
        raise Unauthorized("invalid API key")
    if key.revoked_at is not None:
        raise Unauthorized("API key has been revoked")
    if not key.user.is_active:
        raise Unauthorized("user is inactive")
    now = timezone.now()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        # Coarse on purpose: one write a minute per key, not one per inference call.
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return Principal(user=key.user, expires_at=None, via="api_key")


def access_token_authenticate(*, raw: str) -> Principal:
    """Verifies signature (HS256 only), exp, aud, iss, the claims' types (`tokens.claims_check`) and that
    the token is an access token."""
    try:
        token = CheckedAccessToken(raw)
    except TokenError as exc:
        raise Unauthorized(str(exc)) from exc
    user = User.objects.filter(pk=token.get("user_id"), is_active=True).first()
    if user is None:
        raise Unauthorized("user not found or inactive")
    return Principal(user=user, expires_at=datetime.fromtimestamp(int(token["exp"]), UTC), via="jwt")


def credential_authenticate(*, raw: str) -> Principal:
    """A bearer credential: an API key (``tw_`` prefix) or a JWT access token."""
    if raw.startswith("tw_"):
        return api_key_authenticate(raw=raw)
    return access_token_authenticate(raw=raw)


def _pair_for(user: User) -> TokenPair:
    refresh = RefreshToken.for_user(user)  # type: ignore[misc]
    return TokenPair(access=str(refresh.access_token), refresh=str(refresh))


def token_obtain(*, username: str, password: str) -> TokenPair:
    user = authenticate(username=username, password=password)
    if user is None or not user.is_active:
        raise Unauthorized("no active account with these credentials")
    assert isinstance(user, User)
    User.objects.filter(pk=user.pk).update(last_login=timezone.now())
    return _pair_for(user)


def _blacklist_once(token: RefreshToken) -> None:
    """Blacklists ``token``; raises Unauthorized if it already was, so a refresh token works exactly once
    even when two requests race with it (the unique row decides the winner)."""
    outstanding, _ = OutstandingToken.objects.get_or_create(
        jti=token["jti"],
        defaults={
            "token": str(token),
            "expires_at": datetime.fromtimestamp(int(token["exp"]), UTC),
            "user_id": token.get("user_id"),
        },
    )
    try:
        with transaction.atomic():
            BlacklistedToken.objects.create(token=outstanding)
    except IntegrityError as exc:
        raise Unauthorized("refresh token has already been used or revoked") from exc


def _refresh_token(raw: str) -> RefreshToken:
    try:
        return CheckedRefreshToken(raw)
    except TokenError as exc:
        raise Unauthorized(str(exc)) from exc


def token_refresh(*, refresh: str) -> TokenPair:
    with transaction.atomic():
        token = _refresh_token(refresh)
        user = User.objects.filter(pk=token.get("user_id"), is_active=True).first()
        if user is None:
            raise Unauthorized("user not found or inactive")
        _blacklist_once(token)
        return _pair_for(user)


def token_revoke(*, refresh: str) -> None:
    with transaction.atomic():
        _blacklist_once(_refresh_token(refresh))
        _forget_principals_on_commit()
