from asgiref.sync import sync_to_async
from django.conf import settings
from ninja_extra import api_controller, route, status

from app.api.auth import Controller, bearer_auth, principal_of
from app.api.openapi import errors

from . import selectors, services
from .models import User
from .ratelimit import login_attempt_release, login_attempt_reserve
from .schemas import (
    ApiKeyCreatedOut,
    ApiKeyCreateIn,
    ApiKeyOut,
    MeOut,
    TicketOut,
    TokenObtainIn,
    TokenPairOut,
    TokenRefreshIn,
)
from .tickets import ticket_issue


def _client_ip(request: object) -> str:
    """uvicorn's client address: the TCP peer, or what nginx forwarded where uvicorn trusts it (run-prod)."""
    meta = getattr(request, "META", {})
    return str(meta.get("REMOTE_ADDR") or "unknown")


@api_controller("/auth", tags=["auth"], auth=None)
class AuthController(Controller):
    @route.post("/token", response={200: TokenPairOut, **errors(401, 429)},
                summary="Obtain an access/refresh token pair")
    async def token_obtain(self, payload: TokenObtainIn) -> services.TokenPair:
        attempt = await login_attempt_reserve(client_ip=_client_ip(self.http_request), username=payload.username)
        # A wrong password (Unauthorized) keeps the reservation: it is the failure the limit counts.
        pair = await sync_to_async(services.token_obtain)(username=payload.username, password=payload.password)
        await login_attempt_release(attempt=attempt)
        return pair

    @route.post("/token/refresh", response={200: TokenPairOut, **errors(401, 429)},
                summary="Rotate a refresh token for a new pair")
    async def token_refresh(self, payload: TokenRefreshIn) -> services.TokenPair:
        return await sync_to_async(services.token_refresh)(refresh=payload.refresh)

    @route.post("/token/revoke", response={204: None, **errors(401, 429)}, summary="Blacklist a refresh token")
    async def token_revoke(self, payload: TokenRefreshIn) -> tuple[int, None]:
        await sync_to_async(services.token_revoke)(refresh=payload.refresh)
        return 204, None


@api_controller("/auth/api-keys", tags=["auth"], auth=bearer_auth)
class ApiKeyController(Controller):
    @route.post("", response={201: ApiKeyCreatedOut, **errors(429)}, summary="Create an API key (shown once)")
    async def create(self, payload: ApiKeyCreateIn) -> tuple[int, dict[str, object]]:
        user = self.caller
        key, raw = await sync_to_async(services.api_key_create)(user=user, name=payload.name)
        return status.HTTP_201_CREATED, {
            "prefix": key.prefix,
            "name": key.name,
            "created_at": key.created_at,
            "last_used_at": key.last_used_at,
            "key": raw,
        }

    @route.get("", response={200: list[ApiKeyOut], **errors(429)}, summary="The caller's active API keys")
    async def list(self) -> list[object]:
        user = self.caller
        return [key async for key in selectors.api_key_list(user=user)]

    @route.delete("/{prefix}", response={204: None, **errors(429)}, summary="Revoke an API key")
    async def revoke(self, prefix: str) -> tuple[int, None]:
        user = self.caller
        await sync_to_async(services.api_key_revoke)(user=user, prefix=prefix)
        return 204, None


@api_controller("", tags=["accounts"], auth=bearer_auth)
class MeController(Controller):
    @route.get("/me", response=MeOut, summary="Who the caller is")
    async def me(self) -> dict[str, object]:
        user: User = self.caller
        prefixes = [key.prefix async for key in selectors.api_key_list(user=user)]
        role = "admin" if user.is_superuser else user.role
        return {"username": user.username, "email": user.email, "role": role, "api_keys": prefixes}


@api_controller("/realtime", tags=["realtime"], auth=bearer_auth)
class RealtimeTicketController(Controller):
    @route.post("/tickets", response={201: TicketOut}, summary="A single-use websocket ticket, valid 30 seconds")
    async def ticket(self) -> tuple[int, dict[str, object]]:
        principal = principal_of(self.http_request)
        ticket = await ticket_issue(principal=principal)
        return 201, {"ticket": ticket, "expires_in": settings.REALTIME_TICKET_SECONDS}
