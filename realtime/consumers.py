"""Websocket consumers. Every consumer here runs behind WebsocketAuthMiddleware, so scope holds a user."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from app.core.edges import ws_error
from app.monitoring import metrics, recording
from app.serving import calls, runtime
from inference import jsonio, v2

logger = logging.getLogger(__name__)

CLOSE_TOKEN_EXPIRED = 4401
CLOSE_NOT_FOUND = 4404
MAX_MESSAGE_BYTES = 1024 * 1024


class AuthenticatedConsumer(AsyncWebsocketConsumer):
    """Accepts with the negotiated subprotocol and closes with 4401, after saying why, when the credential
    the socket was opened with expires.

    Every text or binary frame is read with `inference.jsonio` (size and depth limits); one that is not
    a JSON object, or is too large or too deep, is answered with an error frame and the socket stays
    open. A handler that raises is a bug: it is logged, answered with an ``internal_error`` frame, and
    the socket stays open too. Whatever way the consumer ends, `release` stops what it started."""

    _expiry_task: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self.serve(scope, receive, send)
        finally:
            # Channels calls disconnect only when the client's disconnect message is dispatched; a
            # consumer that stops any other way (an exception, a cancelled task) would leave its tasks
            # running, among them the expiry task that closes the socket much later.
            await self.release()

    async def serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The consumer's life: Channels' receive loop unless a subclass runs its own."""
        await super().__call__(scope, receive, send)

    async def release(self) -> None:
        """Cancels the tasks this socket started and takes it out of the metrics. Idempotent: disconnect
        calls it, and `__call__` again when the consumer ends."""
        metrics.websocket_closed(self)
        if self._expiry_task is not None:
            self._expiry_task.cancel()

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
        await self.release()

    async def send_json(self, content: Any) -> None:
        await self.send(text_data=json.dumps(content, separators=(",", ":")))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw: str | bytes = text_data if text_data is not None else (bytes_data or b"")
        try:
            if len(raw) > calls.OFFLOAD_BYTES:  # a large message is parsed off the event loop
                content = await asyncio.to_thread(jsonio.loads, raw, max_bytes=MAX_MESSAGE_BYTES)
            else:
                content = jsonio.loads(raw, max_bytes=MAX_MESSAGE_BYTES)
        except jsonio.JsonTooLarge:
            await self.send_json({"type": "error", "code": "too_large", "message": "message exceeds 1 MiB"})
            return
        except jsonio.JsonTooDeep as exc:
            await self.send_json({"type": "error", "code": "too_deep", "message": f"message refused: {exc}"})
            return
        except ValueError:
            content = None
        if not isinstance(content, dict):
            await self.send_json({"type": "error", "code": "bad_json", "message": "messages must be JSON objects"})
            return
        try:
            await self.receive_message(content, len(raw))
        except StopConsumer:
            raise
        except Exception:
            logger.exception("unhandled error in %s", type(self).__name__)
            await self.send_json({"type": "error", "code": "internal_error", "message": "internal server error"})

    async def receive_message(self, content: dict[str, Any], size: int) -> None:
        """A parsed message of ``size`` characters (or bytes)."""
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

    async def serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
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

    async def release(self) -> None:
        for task in list(getattr(self, "_in_flight", ())):
            task.cancel()
        await super().release()

    async def receive_message(self, content: dict[str, Any], size: int) -> None:
        raw_id = content.get("id")
        request_id = _request_id(raw_id)
        if request_id is None and raw_id is not None:
            await self._reply({"id": None, "code": "invalid_request", "error": "'id' must be a string or an integer"})
            return
        if len(self._in_flight) >= self._max_in_flight:
            await self._reply(
                {"id": request_id, "code": "too_many_in_flight",
                 "error": f"more than {self._max_in_flight} requests in flight on this socket; wait for answers"}
            )
            return
        task = asyncio.create_task(self._infer(content, request_id, size))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _infer(self, content: dict[str, Any], request_id: str | None, size: int) -> None:
        """Answers one request with exactly one frame: the V2 response or ``{"id", "code", "error"}``."""
        started = time.perf_counter()
        try:
            model = content.pop("model", None)
            version = content.pop("version", None)
            priority = content.pop("priority", None)
            if not isinstance(model, str) or not model:
                raise v2.V2Error("'model' (the model name) is required")
            try:
                number = None if version is None else calls.version_number(version)
            except ValueError as exc:
                raise v2.V2Error(str(exc)) from None
            content.pop("id", None)
            if request_id is not None:
                content["id"] = request_id
            target = await runtime.resolve(self.scope["user"], model, number)
            with recording.observe(target, protocol="ws", started=started) as seen:
                # What is left of the message is the V2 request; a large one is decoded off the loop.
                if size > calls.OFFLOAD_BYTES:
                    decoded = await asyncio.to_thread(v2.decode_infer_document, content)
                else:
                    decoded = v2.decode_infer_document(content)
                names, _ = decoded.output_selection(target.signature.output_names)
                timeout = decoded.timeout_seconds
                deadline = runtime.deadline_for(target, None if timeout is None else timeout * 1000)
                inputs = dict(decoded.inputs)
                rank = decoded.priority if priority is None else v2.message_priority(priority)
                served, outputs = await runtime.infer(target, inputs, deadline=deadline, protocol="ws", priority=rank)
                seen.tensors(served, inputs, outputs)
            body, _ = v2.encode_infer_response(model, str(served), request_id, {n: outputs[n] for n in names}, False)
            body, _ = recording.with_prediction_id(body, None, seen.prediction_id)
            await self._send_text(body.decode())
        except Exception as exc:
            await self._reply(ws_error(exc, request_id=request_id, where=f"websocket request {request_id!r}"))

    async def _reply(self, content: dict[str, Any]) -> None:
        await self._send_text(json.dumps(content, separators=(",", ":")))

    async def _send_text(self, text: str) -> None:
        # The client may have gone while its request ran; that is no error of the server's.
        try:
            await self.send(text_data=text)
        except Exception as exc:
            logger.debug("websocket answer not sent: %r", exc)


def _request_id(raw: object) -> str | None:
    """The ``id`` of an infer message as the answer carries it: a string, or an integer written as one;
    None when there is none or it is neither (an integer beyond 64 bits is refused: only the standard
    library's reading produces one, and ``str`` of a long one raises)."""
    if isinstance(raw, str):
        return raw
    if type(raw) is int and -(2**63) <= raw < 2**64:
        return str(raw)
    return None
