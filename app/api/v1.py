"""The /api/v1 NinjaExtraAPI: controllers of every domain app and the one error envelope."""

from __future__ import annotations

import logging

from django.core.exceptions import (
    BadRequest,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404, HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from ninja import Swagger
from ninja.errors import AuthenticationError, AuthorizationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja_extra.exceptions import APIException

from app.accounts.api import ApiKeyController, AuthController, MeController, RealtimeTicketController
from app.api.openapi import TorchwireAPI
from app.api.parsing import JsonParser
from app.core.db import quiet
from app.core.edges import rest_error
from app.core.errors import ApiError, error_response
from app.core.storage import StorageFull
from app.datasets.api import DatasetController
from app.jobs.api import JobController
from app.monitoring.api import MonitoringController, MonitoringOverviewController
from app.registry.api import ArchitectureController, ModelController
from app.serving.api import PredictController
from app.system.api import SystemController
from inference.errors import InferenceError

logger = logging.getLogger("app.api")

api = TorchwireAPI(
    title="Torchwire API",
    version="1",
    description="Train, serve and stream PyTorch models. Authenticate with `Authorization: Bearer <JWT or API key>`.",
    urls_namespace="api-v1",
    openapi_url="/openapi.json",
    docs_url="/docs",
    # Swagger UI from this site's static files (ninja's own copy, see INSTALLED_APPS), and no request to the
    # public validator, which the Content-Security-Policy of the page would refuse anyway.
    docs=Swagger(settings={"validatorUrl": None}),
    parser=JsonParser(),
)
api.register_controllers(
    AuthController,
    ApiKeyController,
    MeController,
    RealtimeTicketController,
    SystemController,
    ModelController,
    ArchitectureController,
    PredictController,
    DatasetController,
    JobController,
    MonitoringController,
    MonitoringOverviewController,
)

def _loc(loc: object) -> list[object]:
    return list(loc) if isinstance(loc, list | tuple) else [loc]


@api.exception_handler(NinjaValidationError)
def _validation(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    details = []
    for err in exc.errors:
        loc = _loc(err.get("loc", ()))
        # Drop ninja's parameter-group names ("body", "payload") so the path reads as the client sent it.
        field = [p for p in loc if p not in ("body", "payload", "query", "path")]
        details.append(
            {"loc": loc, "field": ".".join(str(p) for p in field), "msg": err.get("msg"), "type": err.get("type")}
        )
    first = details[0]["field"] if details else ""
    if not details:
        message = "invalid request"
    else:
        message = f"invalid request: {first}: {details[0]['msg']}" if first else f"invalid request: {details[0]['msg']}"
    return error_response(422, message, details=details)


@api.exception_handler(ApiError)
@api.exception_handler(InferenceError)
def _known_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    return rest_error(exc, where=f"{request.method} {request.path}")


@api.exception_handler(StorageFull)
def _storage_full(request: HttpRequest, exc: StorageFull) -> HttpResponse:
    # The operator's problem, not a bug: one line, no traceback (Django's own 5xx log line is skipped).
    logger.warning("storage full (%s): %s %s stored nothing", exc.reason, request.method, request.path)
    return quiet(error_response(507, "the server's storage is full; nothing was stored, retry later",
                                code="insufficient_storage", details={"reason": exc.reason}))


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = error_response(401, "authentication required: send Authorization: Bearer <token or API key>")
    response["WWW-Authenticate"] = 'Bearer realm="torchwire"'
    return response


@api.exception_handler(AuthorizationError)
def _forbidden_ninja(request: HttpRequest, exc: AuthorizationError) -> HttpResponse:
    return error_response(403, str(exc.message) if hasattr(exc, "message") else "forbidden")


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return error_response(403, str(exc) or "forbidden")


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(404, str(exc) or "not found")


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return error_response(413, "request body is larger than the limit for this endpoint")


@api.exception_handler(MultiPartParserError)
def _bad_multipart(request: HttpRequest, exc: MultiPartParserError) -> HttpResponse:
    # Outside the API Django answers these 400 itself; in here the catch-all below would make them 500s.
    return error_response(400, f"request body is not valid multipart/form-data: {exc}", code="invalid_multipart")


@api.exception_handler(SuspiciousOperation)
def _suspicious(request: HttpRequest, exc: SuspiciousOperation) -> HttpResponse:
    # Too many form fields or files, a malformed multipart part, ... (RequestDataTooBig is 413 above).
    # Only the upload limits say what was wrong; other texts may name server paths.
    known = isinstance(exc, TooManyFieldsSent | TooManyFilesSent)
    return error_response(400, f"request refused: {exc}" if known else "request refused as malformed")


@api.exception_handler(BadRequest)
def _bad_request(request: HttpRequest, exc: BadRequest) -> HttpResponse:
    return error_response(400, str(exc) or "bad request")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 400 and str(exc).startswith("Cannot parse request body"):
        cause = exc.__cause__
        if isinstance(cause, ApiError):  # the parser refused the body for a reason of its own
            return rest_error(cause, where=f"{request.method} {request.path}")
        detail = f": {cause}" if isinstance(cause, ValueError) else ""
        return error_response(422, f"request body is not valid JSON{detail}", code="invalid_json")
    return error_response(exc.status_code, str(exc))


@api.exception_handler(APIException)
def _extra_error(request: HttpRequest, exc: APIException) -> HttpResponse:
    return error_response(exc.status_code, str(exc.detail))


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    """A bug: 500 and the traceback. Except the database being unreachable (Django's OperationalError
    and friends, from any ORM call): 503 with Retry-After, logged once per outage by app.core.db."""
    return rest_error(exc, where=f"{request.method} {request.path}")
