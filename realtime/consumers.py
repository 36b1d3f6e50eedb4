"""Websocket consumers. Every consumer here runs behind WebsocketAuthMiddleware, so scope holds a user."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

CLOSE_TOKEN_EXPIRED = 4401
CLOSE_NOT_FOUND = 4404
MAX_MESSAGE_BYTES = 1024 * 1024


class AuthenticatedConsumer(AsyncWebsocketConsumer):
    """Accepts with the negotiated subprotocol and closes with 4401, after saying why, when the credential
    the socket was opened with expires."""

    _expiry_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self.accept(subprotocol=self.scope.get("accept_subprotocol"))
        expires_at: datetime | None = self.scope["principal"].expires_at
        if expires_at is not None:
            self._expiry_task = asyncio.create_task(self._expire_at(expires_at))

    async def _expire_at(self, expires_at: datetime) -> None:
        await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()))
        await self.send_json(
            {"type": "error", "code": "token_expired", "message": "the access token expired; reconnect with a new one"}
        )
        await self.close(code=CLOSE_TOKEN_EXPIRED)

    async def disconnect(self, code: int) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()

    async def send_json(self, content: Any) -> None:
        await self.send(text_data=json.dumps(content, separators=(",", ":")))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        if len(raw) > MAX_MESSAGE_BYTES:
            await self.send_json({"type": "error", "code": "too_large", "message": "message exceeds 1 MiB"})
            return
        try:
            content = json.loads(raw)
        except ValueError:
            await self.send_json({"type": "error", "code": "bad_json", "message": "messages must be JSON objects"})
            return
        if not isinstance(content, dict):
            await self.send_json({"type": "error", "code": "bad_json", "message": "messages must be JSON objects"})
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any]) -> None:
        raise NotImplementedError


class EchoConsumer(AuthenticatedConsumer):
    """/ws/v1/echo: answers each JSON message with itself and the caller's name; for testing auth."""

    async def receive_json(self, content: dict[str, Any]) -> None:
        await self.send_json({"type": "echo", "user": self.scope["user"].username, "data": content})


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Accepts only to close with 4404, so an authenticated client can tell a wrong path from a refusal."""

    async def connect(self) -> None:
        await self.accept(subprotocol=self.scope.get("accept_subprotocol"))
        await self.close(code=CLOSE_NOT_FOUND)
