"""Bearer authentication for the API: a JWT access token or an API key, checked the same way everywhere."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja_extra import ControllerBase
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
