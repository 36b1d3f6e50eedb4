"""Websocket handshake authentication for every /ws/ route.

Credentials, in order: the subprotocol pair ``Sec-WebSocket-Protocol: bearer, <JWT or API key>`` (the
server then answers with ``bearer``), or ``?ticket=`` from POST /api/v1/realtime/tickets. A handshake
with an Origin header must come from an allowed host; one without (a non-browser client) still needs a
credential. A refused handshake is closed before accept, which uvicorn turns into HTTP 403.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.http.request import validate_host

from app.accounts import auth_cache
from app.accounts.models import User
from app.accounts.services import Principal
from app.accounts.tickets import ticket_redeem
from app.core.db import db_async
from app.core.errors import Unauthorized, Unavailable

logger = logging.getLogger(__name__)

SUBPROTOCOL = "bearer"


class HandshakeRefused(Exception):
    pass


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def origin_allowed(origin: str | None) -> bool:
    if origin is None:
        return True
    if origin in settings.WEBSOCKET_ALLOWED_ORIGINS or "*" in settings.WEBSOCKET_ALLOWED_ORIGINS:
        return True
    host = urlsplit(origin).hostname
    if not host:
        return False
    allowed = [h.strip("[]") if h.startswith("[") else h for h in settings.ALLOWED_HOSTS]
    return validate_host(host, allowed)


def _user_active(user_id: int) -> User | None:
    return User.objects.filter(pk=user_id, is_active=True).first()


async def authenticate_scope(scope: dict[str, Any]) -> tuple[Principal, str | None]:
    """Returns the principal and the subprotocol to accept with, or raises HandshakeRefused."""
    if not origin_allowed(_header(scope, b"origin")):
        raise HandshakeRefused("origin not allowed")
    subprotocols = list(scope.get("subprotocols") or [])
    if subprotocols and subprotocols[0] == SUBPROTOCOL:
        if len(subprotocols) < 2:
            raise HandshakeRefused("bearer subprotocol without a token")
        try:
            principal = await auth_cache.authenticate(subprotocols[1])
        except Unauthorized as exc:
            raise HandshakeRefused(exc.message) from exc
        return principal, SUBPROTOCOL
    query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
    tickets = query.get("ticket")
    if tickets:
        claim = await ticket_redeem(ticket=tickets[0])
        if claim is None:
            raise HandshakeRefused("ticket unknown, expired or already used")
        user = await db_async(_user_active)(claim.user_id)
        if user is None:
            raise HandshakeRefused("user inactive")
        expires = datetime.fromtimestamp(claim.expires_at, UTC) if claim.expires_at else None
        if expires is not None and expires <= datetime.now(UTC):
            raise HandshakeRefused("credential behind the ticket has expired")
        return Principal(user=user, expires_at=expires, via="ticket"), None
    raise HandshakeRefused("no credential")


async def _refuse_unavailable(scope: dict[str, Any], send: Any, exc: Unavailable) -> None:
    """Accepts, then closes with 1013 (try again later): a refusal before the accept would reach the
    client as a 403, which says something else."""
    subprotocols = list(scope.get("subprotocols") or [])
    chosen = SUBPROTOCOL if subprotocols and subprotocols[0] == SUBPROTOCOL else None
    await send({"type": "websocket.accept", "subprotocol": chosen})
    await send({"type": "websocket.close", "code": 1013, "reason": exc.message[:120]})


class WebsocketAuthMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.inner(scope, receive, send)
            return
        try:
            principal, subprotocol = await authenticate_scope(scope)
        except HandshakeRefused as exc:
            logger.info("websocket handshake refused on %s: %s", scope.get("path"), exc)
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 4401})
            return
        except Unavailable as exc:  # the database unreachable and the credential not cached: try later
            message = await receive()
            if message["type"] == "websocket.connect":
                await _refuse_unavailable(scope, send, exc)
            return
        scope = dict(scope, user=principal.user, principal=principal, accept_subprotocol=subprotocol)
        await self.inner(scope, receive, send)
