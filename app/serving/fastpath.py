"""The two hot inference routes as plain ASGI, in front of Django.

``POST /api/v1/models/{name}/predict`` and ``POST /v2/models/{name}[/versions/{v}]/infer`` are
answered here; every other request goes to Django unchanged. The benchmark (bench/RESULTS.md)
found that Django's request cycle cost several times the forward pass of a one-row request: seven
sync-only middlewares are two thread hops each, then URL resolution and django-ninja's parsing. At
concurrency 64 on one core that overhead, not the model, set the throughput.

What a request gets here is what the Django views give it (tests/serving/test_fastpath.py compares
the two on the same requests): the same `calls` functions, bearer authentication, error bodies
(the /api envelope, or V2's ``{"error"}``), status codes and ``Retry-After``, the
``X-Request-ID`` header and log context, the security headers (`app.core.headers`), HTTP metrics
under the Django route names, the body size limit (``TORCHWIRE_MAX_JSON_BYTES``, 413), and cancellation
when the client disconnects (its queued rows leave the batcher). Requests Django would refuse or
redirect before any view runs (a Host outside ALLOWED_HOSTS, plain HTTP under SECURE_SSL_REDIRECT)
are passed to Django to do so.

``TORCHWIRE_FAST_PATH=false`` sends these routes through Django too.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from django.http import HttpResponse
from django.http.request import split_domain_port, validate_host
from django.urls import resolve
from pydantic import TypeAdapter, ValidationError

from app.accounts import auth_cache
from app.accounts.models import User
from app.core.edges import rest_error, v2_error, v2_response
from app.core.errors import Invalid, error_response
from app.core.headers import security_headers
from app.core.jsonbody import TOO_LARGE, read_json_object
from app.core.lifecycle import ASGIApp
from app.core.logging import clean_request_id, request_id_var
from app.monitoring import metrics
from inference import jsonio, v2

from . import calls, v2_views

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PREDICT = re.compile(r"/api/v1/models/([^/]+)/predict")
V2_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
STATUS_CLIENT_GONE = 499  # nginx's code for "the client closed the connection first"


class ClientGone(BaseException):
    """The client disconnected while its body was being read. A BaseException, like a cancellation,
    so the handlers' catch-all for server errors does not answer it."""


class BodyTooLarge(Exception):
    pass


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.body, self.headers = status, body, headers

    @classmethod
    def json(cls, status: int, body: Any) -> Response:
        body = jsonio.dumps(body)
        return cls(status, body, [(b"content-type", b"application/json; charset=utf-8")])  # as django-ninja

    @classmethod
    def of(cls, django_response: HttpResponse) -> Response:
        """An error response built by the helpers the Django views use, so the two cannot differ."""
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in django_response.items()]
        return cls(django_response.status_code, django_response.content, headers)


def _route_of(path: str) -> str:
    return "/" + str(resolve(path).route)


def _security_headers(path: str) -> list[tuple[bytes, bytes]]:
    """The headers Django's middlewares would add to an answer for ``path`` (HSTS separately)."""
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in security_headers(path)]


def _hsts_header() -> tuple[bytes, bytes] | None:
    if not settings.SECURE_HSTS_SECONDS:
        return None
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return b"strict-transport-security", value.encode()


class InferenceFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.enabled: bool = settings.FAST_PATH
        # The route names Django's resolver gives these paths, so /metrics keeps one series per route.
        self.predict_route = _route_of("/api/v1/models/m/predict")
        self.v2_routes = (_route_of("/v2/models/m/infer"), _route_of("/v2/models/m/versions/1/infer"))
        self.security_headers = {route: _security_headers(route) for route in (self.predict_route, *self.v2_routes)}
        self.hsts = _hsts_header()
        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        self.allowed_hosts = allowed
        self.max_body = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        proxy = settings.SECURE_PROXY_SSL_HEADER
        self.proxy_ssl: tuple[str, str] | None = None
        if proxy:
            meta_name, value = proxy
            self.proxy_ssl = (meta_name.removeprefix("HTTP_").replace("_", "-").lower(), value)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]
            if (match := PREDICT.fullmatch(path)) is not None:
                headers = self._headers(scope)
                if headers is not None:
                    await self._serve(self._predict, self.predict_route, match, scope, headers, receive, send)
                    return
            elif (match := V2_INFER.fullmatch(path)) is not None:
                headers = self._headers(scope)
                if headers is not None:
                    route = self.v2_routes[match.group(2) is not None]
                    await self._serve(self._v2_infer, route, match, scope, headers, receive, send)
                    return
        await self.app(scope, receive, send)

    # --- what Django would refuse before a view runs ----------------------------------------------

    def _headers(self, scope: Scope) -> dict[str, str] | None:
        """The request headers, or None when Django must answer (bad Host, HTTPS redirect)."""
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        host = headers.get("x-forwarded-host") if settings.USE_X_FORWARDED_HOST else None
        host = host or headers.get("host")
        if not host:
            return None
        domain, _ = split_domain_port(host)
        if not domain or not validate_host(domain, self.allowed_hosts):
            return None
        if settings.SECURE_SSL_REDIRECT and not self._secure(scope, headers):
            return None
        return headers

    def _secure(self, scope: Scope, headers: dict[str, str]) -> bool:
        if self.proxy_ssl is not None:
            name, expected = self.proxy_ssl
            value = headers.get(name)
            if value is not None:
                return value.split(",", 1)[0].strip() == expected
        return bool(scope.get("scheme") == "https")

    # --- the request cycle ------------------------------------------------------------------------

    async def _serve(self, handler: Callable[..., Awaitable[Response]], route: str, match: re.Match[str],
                     scope: Scope, headers: dict[str, str], receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = clean_request_id(headers.get("x-request-id"))
        token = request_id_var.set(request_id)
        metrics.HTTP_IN_FLIGHT.inc()
        status = 500
        cycle = _Cycle(receive)
        try:
            response = await handler(match, scope, headers, cycle)
            cycle.close()
            status = response.status
            out = response.headers + self.security_headers[route]
            if self.hsts is not None and self._secure(scope, headers):
                out.append(self.hsts)
            out.append((b"x-request-id", request_id.encode()))
            out.append((b"content-length", str(len(response.body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": response.body})
        except ClientGone:
            status = STATUS_CLIENT_GONE
        except asyncio.CancelledError:
            if not cycle.gone:
                raise
            cycle.task.uncancel()  # the client left: nothing to answer, and nothing else to cancel
            status = STATUS_CLIENT_GONE
        finally:
            cycle.close()
            metrics.HTTP_IN_FLIGHT.dec()
            metrics.http_request(route=route, method="POST", status=status, seconds=time.perf_counter() - started)
            request_id_var.reset(token)

    # --- the two routes ---------------------------------------------------------------------------

    async def _predict(self, match: re.Match[str], scope: Scope, headers: dict[str, str],
                       cycle: _Cycle) -> Response:
        try:
            user = await _authenticate(headers)
            if user is None:
                response = Response.of(error_response(401, v2_views.UNAUTHENTICATED))
                response.headers.append((b"www-authenticate", b'Bearer realm="torchwire"'))
                return response
            body = await cycle.body(headers, self.max_body)
            version = _query_version(scope)
            if len(body) > calls.OFFLOAD_BYTES:
                inputs = await asyncio.to_thread(_predict_inputs, body)
            else:
                inputs = _predict_inputs(body)
            timeout_ms = calls.timeout_ms_from_header(headers.get("x-request-timeout-ms"))
            priority = calls.priority_from_header(headers.get("x-priority"))
            return Response.json(200, await calls.predict(user, match.group(1), version, inputs,
                                                         timeout_ms=timeout_ms, size=len(body),
                                                         priority=priority))
        except BodyTooLarge:
            return Response.of(error_response(413, TOO_LARGE))
        except Exception as exc:
            return Response.of(rest_error(exc, where=f"POST {scope['path']}"))

    async def _v2_infer(self, match: re.Match[str], scope: Scope, headers: dict[str, str],
                        cycle: _Cycle) -> Response:
        try:
            user = await _authenticate(headers)
            if user is None:
                response = Response.of(v2_response(401, v2_views.UNAUTHENTICATED))
                response.headers.append((b"www-authenticate", b'Bearer realm="torchwire"'))
                return response
            body = await cycle.body(headers, self.max_body)
            header_length = calls.v2_header_length(headers.get(v2.HEADER_LENGTH_HEADER.lower()))
            payload, json_length = await calls.v2_infer(user, match.group(1), calls.v2_version(match.group(2)),
                                                        body, header_length)
        except BodyTooLarge:
            return Response.of(v2_response(413, v2_views.TOO_LARGE))
        except Exception as exc:
            return Response.of(v2_error(exc, where=f"POST {scope['path']}"))
        if json_length is None:
            return Response(200, payload, [(b"content-type", b"application/json")])
        return Response(200, payload, [(b"content-type", b"application/octet-stream"),
                                       (v2.HEADER_LENGTH_HEADER.lower().encode(), str(json_length).encode())])


class _Cycle:
    """One request's link to its client: reads the body, then watches for a disconnect and cancels the
    request's task when it comes, which withdraws its queued rows from the batcher (handlers read the
    whole body first, so the only message left to receive is ``http.disconnect``)."""

    __slots__ = ("gone", "receive", "task", "watcher")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.gone = False
        self.watcher: asyncio.Future[dict[str, Any]] | None = None

    async def body(self, headers: dict[str, str], limit: int) -> bytes:
        length = headers.get("content-length")
        if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
            raise BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self.watcher = asyncio.ensure_future(self.receive())
        self.watcher.add_done_callback(self._on_message)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _on_message(self, done: asyncio.Future[dict[str, Any]]) -> None:
        if not done.cancelled() and done.exception() is None and done.result()["type"] == "http.disconnect":
            self.gone = True
            self.task.cancel()

    def close(self) -> None:
        if self.watcher is not None and not self.watcher.done():
            self.watcher.cancel()


async def _authenticate(headers: dict[str, str]) -> User | None:
    """The caller, or None without a bearer credential; a wrong credential raises Unauthorized."""
    principal = await auth_cache.authenticate_header(headers.get("authorization", ""))
    return None if principal is None else principal.user


_VERSION_QUERY: TypeAdapter[int] = TypeAdapter(calls.VersionQuery)


def _query_version(scope: Scope) -> int | None:
    """``?version=N`` as django-ninja parses it: the same validation, and a 422 with the same details."""
    query: bytes = scope.get("query_string", b"")
    if b"version" not in query:
        return None
    values = parse_qs(query.decode("latin-1")).get("version")
    if not values:
        return None
    try:
        return _VERSION_QUERY.validate_python(values[-1])
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        msg, kind = error["msg"], error["type"]
        raise Invalid(f"invalid request: version: {msg}", details=[
            {"loc": ["query", "version"], "field": "version", "msg": msg, "type": kind}]) from None


def _predict_inputs(body: bytes) -> Any:
    """``inputs`` of a predict body, with the errors django-ninja gives for the same body."""
    payload = read_json_object(body, max_bytes=None)  # the body was read within the limit
    if "inputs" not in payload:
        raise Invalid("invalid request: inputs: Field required", details=[
            {"loc": ["body", "payload", "inputs"], "field": "inputs", "msg": "Field required", "type": "missing"}])
    return payload["inputs"]
