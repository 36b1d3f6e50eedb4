"""HTTP request metrics by route template. First in MIDDLEWARE, so the time includes every other layer."""

from __future__ import annotations

import time
from collections.abc import Awaitable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from app.core.middleware import Handler

from . import metrics

UNMATCHED = "<unmatched>"


def route_of(request: HttpRequest) -> str:
    """The URL pattern that matched (``/api/v1/models/<name>/predict``), or UNMATCHED: never the raw
    path, which would make a series per model name, id or scanner probe."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED
    return "/" + str(match.route)


class HttpMetricsMiddleware:
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
        started = time.perf_counter()
        status = 500
        metrics.HTTP_IN_FLIGHT.inc()
        try:
            response = self.get_response(request)
            assert isinstance(response, HttpResponseBase)
            status = response.status_code
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            self._record(request, status, started)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        status = 500
        metrics.HTTP_IN_FLIGHT.inc()
        try:
            response = await self.get_response(request)  # type: ignore[misc]
            status = response.status_code
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            self._record(request, status, started)
        return response

    @staticmethod
    def _record(request: HttpRequest, status: int, started: float) -> None:
        metrics.http_request(route=route_of(request), method=request.method or "", status=status,
                             seconds=time.perf_counter() - started)
