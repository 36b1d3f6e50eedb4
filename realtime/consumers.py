"""Websocket consumers. Every consumer here runs behind WebsocketAuthMiddleware, so scope holds a user."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from app.core.errors import STATUS_CODES, ApiError
from app.monitoring import metrics, recording
from app.serving import runtime
from inference import jsonio, v2
from inference.errors import InferenceError

CLOSE_TOKEN_EXPIRED = 4401
CLOSE_NOT_FOUND = 4404
MAX_MESSAGE_BYTES = 1024 * 1024


class AuthenticatedConsumer(AsyncWebsocketConsumer):
    """Accepts with the negotiated subprotocol and closes with 4401, after saying why, when the credential
    the socket was opened with expires."""

    _expiry_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self.accept(subprotocol=self.scope.get("accept_subprotocol"))
        metrics.websocket_opened(self)
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
        metrics.websocket_closed(self)
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
            content = jsonio.loads(raw)
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


class InferConsumer(AuthenticatedConsumer):
    """/ws/v1/infer: V2 infer requests as JSON messages, with ``model`` (and optional ``version``) and an
    ``id``; each answer is the V2 response with the same ``id``, or ``{"id", "error", "code"}``.

    Requests run concurrently and are answered as they complete, so answers may come out of order.
    More than ``WS_MAX_IN_FLIGHT`` in flight is refused at once. Closing the socket cancels what is
    still queued, which removes its rows from the batcher before they are computed.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Channels' AsyncConsumer.__call__ without the channel layer: nothing is ever sent to this
        # consumer's channel, and listening on it costs a Redis subscription per socket and, per frame,
        # a new receive task and an asyncio.wait over both sources.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Frames skip Channels' close_old_connections, a hop to the one sync thread per frame. It only
        # closes connections that thread holds, and this consumer never queries there: the serving
        # path queries through app.core.db.db_async, which closes its own connection. Connect and
        # disconnect still go through Channels (and close_old_connections).
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def connect(self) -> None:
        self._in_flight: set[asyncio.Task[None]] = set()
        self._max_in_flight: int = settings.WS_MAX_IN_FLIGHT  # once per socket: settings reads are not free
        await super().connect()

    async def disconnect(self, code: int) -> None:
        for task in list(getattr(self, "_in_flight", ())):
            task.cancel()
        await super().disconnect(code)

    async def receive_json(self, content: dict[str, Any]) -> None:
        request_id = content.get("id")
        if len(self._in_flight) >= self._max_in_flight:
            await self.send_json(
                {"id": request_id, "code": "too_many_in_flight",
                 "error": f"more than {self._max_in_flight} requests in flight on this socket; wait for answers"}
            )
            return
        task = asyncio.create_task(self._infer(content))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _infer(self, content: dict[str, Any]) -> None:
        request_id = content.get("id")
        started = time.perf_counter()
        try:
            model = content.pop("model", None)
            version = content.pop("version", None)
            priority = content.pop("priority", None)
            if not isinstance(model, str) or not model:
                raise v2.V2Error("'model' (the model name) is required")
            if version is not None and not (isinstance(version, int | str) and str(version).isdigit()):
                raise v2.V2Error("'version' must be a positive integer")
            if request_id is not None:
                content["id"] = request_id = str(request_id)
            target = await runtime.resolve(self.scope["user"], model, None if version is None else int(version))
            with recording.observe(target, protocol="ws", started=started) as seen:
                decoded = v2.decode_infer_document(content)  # what is left of the message is the V2 request
                names, _ = decoded.output_selection(target.signature.output_names)
                timeout = decoded.timeout_seconds
                deadline = runtime.deadline_for(target, None if timeout is None else timeout * 1000)
                inputs = dict(decoded.inputs)
                rank = decoded.priority if priority is None else v2.message_priority(priority)
                served, outputs = await runtime.infer(target, inputs, deadline=deadline, protocol="ws", priority=rank)
                seen.tensors(served, inputs, outputs)
            body, _ = v2.encode_infer_response(model, str(served), request_id, {n: outputs[n] for n in names}, False)
            body, _ = recording.with_prediction_id(body, None, seen.prediction_id)
            await self.send(text_data=body.decode())
        except InferenceError as exc:
            await self.send_json({"id": request_id, "code": exc.code, "error": exc.message})
        except ApiError as exc:
            code = exc.code or STATUS_CODES.get(exc.status, "error")
            await self.send_json({"id": request_id, "code": code, "error": exc.message})
