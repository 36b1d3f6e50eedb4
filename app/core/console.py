"""The console bridge: uvicorn forwards every HTTP request that is not the backend's to the Next.js server.

`make run` serves one origin (http://127.0.0.1:8000). The backend's paths (``/api``, ``/v2``, ``/ws``,
``/admin``, ``/static``, ``/healthz``, ``/readyz``, ``/metrics``) stay here; everything else (the
console's pages, its ``/_next`` assets and its ``/session`` route handlers) is streamed to the Next.js
standalone server on a private loopback port (``TORCHWIRE_CONSOLE_URL``). Websockets never go there: the
browser's websockets are the backend's ``/ws`` routes. Under `make run-prod` nginx routes by path instead
and this bridge is off (docs/decisions.md says why uvicorn, not Next, holds the public port).

The console's build assets (``/_next/static/``, content-hashed and immutable) are answered here from
``TORCHWIRE_CONSOLE_STATIC`` when set (the launcher sets it), gzipped ahead of time by the build, rather
than making every page load cross two processes and compress its scripts again each time.

Bodies stream both ways without buffering (React streams server components as they render), the
Host header is kept (the console checks Origin against it) and ``X-Forwarded-For``/``-Proto`` say who
asked. A request Django would refuse before any view (a Host outside ALLOWED_HOSTS, plain HTTP under
SECURE_SSL_REDIRECT) is left to Django.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import logging
import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from app.core.lifecycle import ASGIApp

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

BACKEND_PATHS = frozenset({"/api", "/v2", "/ws", "/admin", "/healthz", "/readyz", "/metrics"})
BACKEND_PREFIXES = ("/api/", "/v2/", "/ws/", "/admin/")
# RFC 9110 7.6.1 connection-specific fields, which a proxy must not forward.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
                        b"upgrade", b"proxy-authenticate", b"proxy-authorization"})
UNAVAILABLE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Console unavailable</title>"
    b"<body style='font-family:sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem'>"
    b"<h1>The console is not answering</h1><p>The web console's server is starting or has stopped. "
    b"The API is up: <a href='/api/v1/docs'>/api/v1/docs</a>. Reload in a few seconds.</p></body></html>"
)


STATIC_PREFIX = "/_next/static/"
_TYPES = {".js": "application/javascript", ".css": "text/css", ".woff2": "font/woff2", ".json": "application/json",
          ".map": "application/json", ".svg": "image/svg+xml"}


def is_backend_path(path: str) -> bool:
    static = "/" + settings.STATIC_URL.strip("/") + "/"
    return path in BACKEND_PATHS or path.startswith(BACKEND_PREFIXES) or path.startswith(static) \
        or path + "/" == static


class ConsoleBridge:
    def __init__(self, app: ASGIApp, console_url: str, static_dir: str = "") -> None:
        self.app = app
        self.console_url = console_url.rstrip("/")
        self._client: httpx.AsyncClient | None = None
        self.static_root = Path(static_dir).resolve() if static_dir else None
        # Build assets never change under a name (the name is their hash): read each once.
        self._static: dict[Path, bytes] = {}

    def client(self) -> httpx.AsyncClient:
        # Made on first use, on the server's event loop (an AsyncClient is bound to the loop it runs on).
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(connect=5, read=300, write=60, pool=10),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=20),
                follow_redirects=False,
                trust_env=False,
                # A proxy must not keep cookies: httpx's default jar would replay one browser's session
                # cookie on every other browser's requests.
                cookies=http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_backend_path(scope["path"]) or not self._django_would_serve(scope):
            await self.app(scope, receive, send)
            return
        static = self.static_root is not None and scope["path"].startswith(STATIC_PREFIX)
        if static and scope["method"] in ("GET", "HEAD"):
            await self._static_file(scope, send)
            return
        await self._forward(scope, receive, send)

    async def _read(self, path: Path) -> bytes | None:
        if path not in self._static:
            try:
                self._static[path] = await asyncio.to_thread(path.read_bytes)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
                return None
        return self._static[path]

    async def _static_file(self, scope: Scope, send: Send) -> None:
        assert self.static_root is not None
        name = scope["path"][len(STATIC_PREFIX):]
        path = (self.static_root / name).resolve()
        if not name or ".." in name.split("/") or not path.is_relative_to(self.static_root) or path.suffix == ".gz":
            await _answer(send, 404, b"not found", [(b"content-type", b"text/plain")])
            return
        accepts = next((v for k, v in scope["headers"] if k == b"accept-encoding"), b"")
        body = await self._read(path.with_name(path.name + ".gz")) if b"gzip" in accepts else None
        gzipped = body is not None
        if body is None:
            body = await self._read(path)
        if body is None:
            await _answer(send, 404, b"not found", [(b"content-type", b"text/plain")])
            return
        kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = [(b"content-type", kind.encode()), (b"cache-control", b"public, max-age=31536000, immutable"),
                   (b"vary", b"Accept-Encoding"), (b"x-content-type-options", b"nosniff")]
        if gzipped:
            headers.append((b"content-encoding", b"gzip"))
        await _answer(send, 200, b"" if scope["method"] == "HEAD" else body, headers, length=len(body))

    def _django_would_serve(self, scope: Scope) -> bool:
        """False where Django refuses or redirects before any view runs; those requests go to Django."""
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        domain, _ = split_domain_port(host)
        if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
            return False
        return not (settings.SECURE_SSL_REDIRECT and scope.get("scheme") != "https")

    def _request_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP and not k.startswith(b"x-forwarded-")]
        client = scope.get("client")
        # uvicorn has already applied --proxy-headers to scope["client"] and scope["scheme"].
        if client:
            headers.append((b"x-forwarded-for", str(client[0]).encode("latin-1")))
        headers.append((b"x-forwarded-proto", str(scope.get("scheme", "http")).encode("latin-1")))
        return headers

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        url = self.console_url + path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        method = scope["method"]
        body = _request_body(receive) if method not in ("GET", "HEAD") else None
        client = self.client()
        request = client.build_request(method, url, headers=self._request_headers(scope), content=body)
        try:
            response = await client.send(request, stream=True)
        except httpx.TransportError as exc:
            logger.warning("console bridge: %s %s: %s", method, scope["path"], exc)
            await _answer(send, 502, UNAVAILABLE, [(b"content-type", b"text/html; charset=utf-8"),
                                                   (b"retry-after", b"2"), (b"cache-control", b"no-store")])
            return
        try:
            headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (httpx.TransportError, OSError) as exc:
            # The console broke off mid-answer or the browser went away: nothing more can be sent.
            logger.info("console bridge: %s %s ended early: %s", method, scope["path"], exc)
        finally:
            await response.aclose()


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]],
                  length: int | None = None) -> None:
    with contextlib.suppress(OSError):
        size = len(body) if length is None else length
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(size).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})
