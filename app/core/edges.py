"""What each edge answers for an error: one mapper per protocol, the only place a failure gets a status.

Errors come in three families: `app.core.errors.ApiError` (raised by services, with its HTTP status),
`inference.errors.InferenceError` (the model library's, with a protocol-neutral `ErrorKind`) and the
database being unreachable (any exception `app.core.db.unavailable_error` recognises: 503 with
Retry-After). Anything else is a bug: logged with its traceback, answered 500 without details.

- `rest_error`: the /api envelope ``{"error": {"code", "message", "details"}}``; a client's mistake in
  an inference request (`ErrorKind.INVALID`) is 422, as for any other invalid /api request.
- `v2_error`: the Open Inference Protocol's ``{"error": "<message>"}``; the protocol says 400 for a bad
  request.
- `ws_error`: the websocket's ``{"id", "code", "error"}`` message; no status, the socket stays open.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.http import JsonResponse

from app.core.db import DatabaseUnavailable, quiet, unavailable_error
from app.core.errors import STATUS_CODES, ApiError, error_response
from inference import v2
from inference.errors import ErrorKind, InferenceError, QueueFull

logger = logging.getLogger("app.edges")

REST_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID: 422,
    ErrorKind.UNPROCESSABLE: 422,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.OVERLOADED: 503,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.INTERNAL: 500,
}
V2_STATUS: dict[ErrorKind, int] = {**REST_STATUS, ErrorKind.INVALID: 400}

INTERNAL_MESSAGE = "internal server error"
REST_INTERNAL_MESSAGE = "internal server error; quote the X-Request-ID header when reporting it"


def _known(exc: BaseException) -> ApiError | InferenceError | None:
    """``exc`` as an error the caller may be told about, or None for a bug."""
    if isinstance(exc, ApiError | InferenceError):
        return exc
    return unavailable_error(exc)


def _headers(exc: ApiError | InferenceError) -> dict[str, str]:
    if isinstance(exc, QueueFull):
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after_seconds)))}
    return dict(exc.headers) if isinstance(exc, ApiError) else {}


def _bug(exc: BaseException, where: str) -> None:
    logger.error("unhandled error on %s", where, exc_info=exc)


def rest_error(exc: BaseException, *, where: str) -> JsonResponse:
    """The /api envelope for ``exc``; ``where`` names the request in the log when it is a bug."""
    known = _known(exc)
    if known is None:
        _bug(exc, where)
        return error_response(500, REST_INTERNAL_MESSAGE)
    if isinstance(known, InferenceError):
        return error_response(REST_STATUS[known.kind], known.message, code=known.code, details=known.details or None,
                              headers=_headers(known))
    response = error_response(known.status, known.message, code=known.code, details=known.details,
                              headers=_headers(known))
    return quiet(response) if isinstance(known, DatabaseUnavailable) else response


def v2_response(status: int, message: str, headers: dict[str, str] | None = None) -> JsonResponse:
    """A V2 error body with ``status``, for what the edge refuses itself (405, 401, 413)."""
    response = JsonResponse(v2.error_body(message), status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def v2_error(exc: BaseException, *, where: str) -> JsonResponse:
    """The V2 answer for ``exc``; ``where`` names the request in the log when it is a bug."""
    known = _known(exc)
    if known is None:
        _bug(exc, where)
        return v2_response(500, INTERNAL_MESSAGE)
    if isinstance(known, InferenceError):
        return v2_response(V2_STATUS[known.kind], known.message, _headers(known))
    response = v2_response(known.status, known.message, _headers(known))
    return quiet(response) if isinstance(known, DatabaseUnavailable) else response


def ws_error(exc: BaseException, *, request_id: str | None, where: str) -> dict[str, Any]:
    """The websocket message answering request ``request_id`` that failed with ``exc``."""
    known = _known(exc)
    if known is None:
        _bug(exc, where)
        return {"id": request_id, "code": "internal_error", "error": INTERNAL_MESSAGE}
    if isinstance(known, InferenceError):
        return {"id": request_id, "code": known.code, "error": known.message}
    return {"id": request_id, "code": known.code or STATUS_CODES.get(known.status, "error"), "error": known.message}
