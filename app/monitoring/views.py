"""GET /metrics: open from loopback (a local Prometheus or sidecar), otherwise admin credentials."""

from __future__ import annotations

import ipaddress

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app.accounts.models import Role
from app.accounts.services import credential_authenticate
from app.core.db import db_async
from app.core.errors import Unauthorized, error_response

from .metrics import refresh_gauges, render


def _loopback(request: HttpRequest) -> bool:
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


async def metrics_view(request: HttpRequest) -> HttpResponse:
    # Behind a proxy every request comes from loopback; the proxy marks forwarded ones, and those
    # must authenticate like any remote caller.
    forwarded = "HTTP_X_FORWARDED_FOR" in request.META or "HTTP_X_REAL_IP" in request.META
    if forwarded or not _loopback(request):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return error_response(401, "metrics need admin credentials from outside loopback")
        try:
            principal = await db_async(credential_authenticate)(raw=token.strip())
        except Unauthorized as exc:
            return error_response(401, exc.message)
        if not principal.user.has_role(Role.ADMIN):
            return error_response(403, "metrics need the admin role")
    refresh_gauges()
    # Off the loop: the multiprocess files, Redis and the jobs query block.
    return HttpResponse(await db_async(render)(), content_type=CONTENT_TYPE_LATEST)
