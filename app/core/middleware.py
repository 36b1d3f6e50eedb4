"""Request id propagation, the security headers, and the JSON error envelope for everything under /api/."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from asgiref.sync import SyncToAsync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase

from app.core.db import quiet, unavailable_error
from app.core.errors import error_response
from app.core.headers import security_headers
from app.core.logging import clean_request_id, request_id_var

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]] | Callable[[HttpRequest], HttpResponse]


class RequestIdMiddleware:
    """Binds the request id for logs and Celery dispatches, and returns it as X-Request-ID."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        request_id = clean_request_id(request.headers.get("X-Request-ID"))
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
            assert isinstance(response, HttpResponse)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        request_id = clean_request_id(request.headers.get("X-Request-ID"))
        token = request_id_var.set(request_id)
        try:
            response = await self.get_response(request)  # type: ignore[misc]
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


def _needs_envelope(request: HttpRequest, response: HttpResponse) -> bool:
    if not request.path.startswith("/api/") or response.status_code < 400 or response.streaming:
        return False
    if response.get("Content-Type", "").startswith("application/json"):
        try:
            body = json.loads(response.content)
        except (ValueError, AttributeError):
            return True
        return not (isinstance(body, dict) and isinstance(body.get("error"), dict))
    return True


def _envelope(response: HttpResponse) -> HttpResponse:
    status = response.status_code
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    wrapped = error_response(status, phrase)
    # Everything but the body's own headers carries over: Allow, Retry-After, WWW-Authenticate, the request
    # id, and the security headers the inner middlewares added.
    for header, value in response.items():
        if header.lower() not in ("content-type", "content-length"):
            wrapped[header] = value
    return wrapped


class ApiErrorEnvelopeMiddleware:
    """Rewrites any non-envelope 4xx/5xx under /api/ (URL-resolver 404s, 405s, Django's own 400/413/500).

    The API's own handlers already answer with the envelope; this catches what happens outside them.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        response = self.get_response(request)
        assert isinstance(response, HttpResponse)
        return _envelope(response) if _needs_envelope(request, response) else response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        response = await self.get_response(request)  # type: ignore[misc]
        return _envelope(response) if _needs_envelope(request, response) else response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A view outside the API's own handlers (V2 metadata, the admin) that found the database
        unreachable: 503 with Retry-After in the route's error shape, not a 500 and a traceback."""
        unavailable = unavailable_error(exception)
        if unavailable is None:
            return None
        response: HttpResponse
        if request.path.startswith("/api/"):
            response = error_response(unavailable.status, unavailable.message, code=unavailable.code)
        elif request.path.startswith("/v2/"):
            response = JsonResponse({"error": unavailable.message}, status=unavailable.status)
        else:
            response = HttpResponse(unavailable.message, status=unavailable.status, content_type="text/plain")
        for name, value in unavailable.headers.items():
            response[name] = value
        return quiet(response)


class StreamingConnectionMiddleware:
    """Hands the request's database connections back to the pool before a streaming response starts,
    and lets the request's sync thread go.

    Django closes a request's connections only when the response is closed (``request_finished``), so a
    Server-Sent Events stream or a long download would keep the pooled connection that its view (or a
    middleware) used on the request's thread for as long as it runs: a pool of 20 would then hold 20
    streams at most. The body of a streaming response must open its own short-lived connections
    (``app.core.db.db_async``). Under ASGI this runs on the request's own sync thread (the
    ``ThreadSensitiveContext`` Django opens per request), which is where those connections live.

    That thread would also stay parked until the stream ends: a thousand streams, a thousand threads
    (and a container's pid limit). Its executor is shut down here; a later thread-sensitive call of the
    same request (Django's ``response.close()``) gets a fresh one, which the context's exit cleans up.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._acall(request)
        response = self.get_response(request)
        assert isinstance(response, HttpResponseBase)
        if response.streaming:
            connections.close_all()
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)  # type: ignore[misc]
        if response.streaming:
            await sync_to_async(connections.close_all)()
            context = SyncToAsync.thread_sensitive_context.get(None)
            executor = SyncToAsync.context_to_thread_executor.pop(context, None) if context else None
            if executor is not None:
                executor.shutdown(wait=False)
        return response


class SecurityHeadersMiddleware:
    """Puts `app.core.headers.security_headers` on every answer that lacks one of them, also on those rebuilt
    or made by the middlewares inside it (a view's own value wins; ``xframe_options_exempt`` is honoured)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._acall(request)
        response = self.get_response(request)
        assert isinstance(response, HttpResponseBase)  # streaming answers (SSE, CSV) are not HttpResponse
        return _secured(request, response)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)  # type: ignore[misc]
        return _secured(request, response)


def _secured(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    for header, value in security_headers(request.path):
        if header == "X-Frame-Options" and getattr(response, "xframe_options_exempt", False):
            continue
        response.headers.setdefault(header, value)
    return response
