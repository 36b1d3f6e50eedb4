"""The Open Inference Protocol (KServe V2) under /v2, for existing Triton/KServe clients.

Errors follow that protocol: ``{"error": "<message>"}`` with 400 for a bad request (not the /api/v1
envelope). Health endpoints are open; everything else takes the same bearer credentials as the API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from app.accounts import auth_cache
from app.accounts.models import User
from app.core.edges import v2_error, v2_response
from app.core.errors import NotFound
from app.core.lifecycle import state
from app.registry.models import ModelVersion
from inference import v2
from inference.errors import InferenceError
from inference.signature import Signature

from . import calls, catalog, runtime

logger = logging.getLogger(__name__)

SERVER_NAME = "torchwire"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data"]
UNAUTHENTICATED = "authentication required: send Authorization: Bearer <token or API key>"
TOO_LARGE = "request body is larger than the limit"

View = Callable[..., Coroutine[Any, Any, HttpResponse]]


def v2_endpoint(*, methods: tuple[str, ...], auth: bool = True) -> Callable[[View], View]:
    """Method check, bearer auth and the protocol's error shape around a V2 view."""

    def decorate(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = v2_response(405, f"method {request.method} not allowed")
                response["Allow"] = ", ".join(methods)
                return response
            try:
                if auth:
                    principal = await auth_cache.authenticate_header(request.headers.get("Authorization", ""))
                    if principal is None:
                        response = v2_response(401, UNAUTHENTICATED)
                        response["WWW-Authenticate"] = 'Bearer realm="torchwire"'
                        return response
                    request.user = principal.user
                return await view(request, *args, **kwargs)
            except RequestDataTooBig:
                return v2_response(413, TOO_LARGE)
            except Exception as exc:
                # Answered in this protocol, a bug too (Django's own 500 page is HTML).
                return v2_error(exc, where=f"{request.method} {request.path}")

        return wrapper

    return decorate


@v2_endpoint(methods=("GET",), auth=False)
async def health_live(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"live": True})


@v2_endpoint(methods=("GET",), auth=False)
async def health_ready(request: HttpRequest) -> HttpResponse:
    ready = state.started and not state.draining
    return JsonResponse({"ready": ready}, status=200 if ready else 503)


@v2_endpoint(methods=("GET",))
async def server_metadata(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})


def _version_numbers(model_id: int) -> list[str]:
    numbers = ModelVersion.objects.filter(model_id=model_id).order_by("number").values_list("number", flat=True)
    return [str(n) for n in numbers]


@v2_endpoint(methods=("GET",))
async def model_metadata(request: HttpRequest, name: str, version: str | None = None) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    info = await catalog.model_for(user, name)
    number = calls.v2_version(version) if version is not None else info.production
    if number is None:
        raise NotFound(f"model {name!r} has no production version; ask for a version explicitly")
    found = await catalog.version_info(info, number)
    if found is None:
        raise NotFound(f"model {name!r} has no version {number}")
    versions = await sync_to_async(_version_numbers)(info.id)
    return JsonResponse(v2.model_metadata(name, versions, Signature.from_dict(found.signature)))


@v2_endpoint(methods=("GET",))
async def model_ready(request: HttpRequest, name: str, version: str | None = None) -> HttpResponse:
    """Ready means loaded and warmed up in this process: asking loads it if needed."""
    user: User = request.user  # type: ignore[assignment]
    try:
        target = await runtime.resolve(user, name, calls.v2_version(version))
        await runtime.get_pool().get(name, target.label)
    except InferenceError as exc:
        return JsonResponse({"name": name, "ready": False, "error": exc.message}, status=400)
    return JsonResponse({"name": name, "version": str(target.version), "ready": True})


@v2_endpoint(methods=("POST",))
async def model_infer(request: HttpRequest, name: str, version: str | None = None) -> HttpResponse:
    """Served by `app.serving.fastpath` unless it is switched off; the same call either way."""
    user: User = request.user  # type: ignore[assignment]
    header_length = calls.v2_header_length(request.headers.get(v2.HEADER_LENGTH_HEADER))
    payload, json_length = await calls.v2_infer(user, name, calls.v2_version(version), request.body,
                                                header_length)
    if json_length is None:
        return HttpResponse(payload, content_type="application/json")
    response = HttpResponse(payload, content_type="application/octet-stream")
    response[v2.HEADER_LENGTH_HEADER] = str(json_length)
    return response
