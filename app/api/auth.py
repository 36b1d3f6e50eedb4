"""Bearer authentication for the API: a JWT access token or an API key, checked the same way everywhere."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from django.http import HttpRequest
from ninja_extra import ControllerBase
from ninja_extra.permissions import AsyncBasePermission
from ninja_extra.security import AsyncHttpBearer

from app.accounts import auth_cache
from app.accounts.models import Role, User
from app.accounts.services import Principal
from app.core.errors import Forbidden


class BearerAuth(AsyncHttpBearer):
    async def authenticate(self, request: HttpRequest, token: str) -> User | None:
        if not token:
            return None
        principal = await auth_cache.authenticate(token.strip())
        request.principal = principal  # type: ignore[attr-defined]
        request.user = principal.user
        return principal.user


bearer_auth = BearerAuth()


def principal_of(request: HttpRequest) -> Principal:
    principal: Principal = request.principal  # type: ignore[attr-defined]
    return principal


def require_role(user: Any, role: Role) -> None:
    """Raises 403 unless ``user`` has at least ``role``."""
    if not isinstance(user, User) or not user.has_role(role):
        raise Forbidden(f"this action needs the {role.value} role or higher")


PathCheck = Callable[[User, dict[str, Any]], Awaitable[None]]


class BeforeBody(AsyncBasePermission):
    """A route's permission check that runs before its body is parsed.

    ninja-extra checks route permissions after authentication and before it resolves the parameters,
    which is when Django parses a multipart body (file parts spooled to disk, fields decoded). So an
    upload from a caller who may not make it is refused without its body being parsed, and a malformed
    body from such a caller answers 403, not 400. ``check(caller, path_params)`` raises an ApiError
    (403, 404) to refuse; the path parameters are the URL's strings, not yet converted.
    """

    def __init__(self, check: PathCheck) -> None:
        self.check = check

    async def has_permission_async(self, request: HttpRequest, controller: ControllerBase) -> bool:
        user = getattr(request, "auth", None)
        if not isinstance(user, User):
            raise Forbidden("this action needs an authenticated user")
        match = request.resolver_match
        await self.check(user, dict(match.kwargs) if match is not None else {})
        return True


def role_before_body(role: Role) -> BeforeBody:
    """`BeforeBody` that only asks for ``role``."""

    async def check(user: User, path: dict[str, Any]) -> None:
        require_role(user, role)

    return BeforeBody(check)


class Controller(ControllerBase):
    """Base of the API controllers: typed access to the request and the authenticated caller."""

    @property
    def http_request(self) -> HttpRequest:
        assert self.context is not None and self.context.request is not None
        return self.context.request

    @property
    def caller(self) -> User:
        user = getattr(self.http_request, "auth", None)
        assert isinstance(user, User), "caller is only available on authenticated routes"
        return user
