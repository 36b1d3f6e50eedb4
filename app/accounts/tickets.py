"""Single-use websocket tickets: a short-lived stand-in for a bearer token in a ``?ticket=`` query string,
for clients that cannot set the subprotocol header. Redis holds them; GETDEL makes redemption atomic."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

from django.conf import settings

from app.core.redis import get_redis

from .services import Principal

_PREFIX = "tw:ws-ticket:"


@dataclass(frozen=True)
class TicketClaim:
    user_id: int
    expires_at: float | None  # when the credential that issued the ticket expires


async def ticket_issue(*, principal: Principal) -> str:
    ticket = secrets.token_urlsafe(32)
    claim = {
        "user_id": principal.user.pk,
        "expires_at": principal.expires_at.timestamp() if principal.expires_at else None,
        "issued_at": time.time(),
    }
    await get_redis().set(_PREFIX + ticket, json.dumps(claim), ex=settings.REALTIME_TICKET_SECONDS)
    return ticket


async def ticket_redeem(*, ticket: str) -> TicketClaim | None:
    """Returns the claim once; a second redemption, or one after 30 seconds, returns None."""
    if not ticket or len(ticket) > 128:
        return None
    raw = await get_redis().getdel(_PREFIX + ticket)
    if raw is None:
        return None
    data = json.loads(raw)
    return TicketClaim(user_id=int(data["user_id"]), expires_at=data.get("expires_at"))
