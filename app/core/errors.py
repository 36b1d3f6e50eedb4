"""The one error shape of the API: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "timeout",
    507: "insufficient_storage",
}


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    body = {"error": {"code": code or STATUS_CODES.get(status, "error"), "message": message, "details": details}}
    response = JsonResponse(body, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


class ApiError(Exception):
    """Raised by services for an error the caller can act on; the API turns it into the JSON envelope."""

    status = 400
    code: str | None = None

    def __init__(self, message: str, *, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class NotFound(ApiError):
    status = 404


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class Conflict(ApiError):
    status = 409


class Invalid(ApiError):
    status = 422


class BodyNotObject(Invalid):
    """A JSON request body that is not an object (every body of the API is one)."""

    def __init__(self) -> None:
        super().__init__("request body must be a JSON object", details=[
            {"loc": ["body"], "field": "", "msg": "must be a JSON object", "type": "model_type"}])


class PayloadTooLarge(ApiError):
    status = 413


class RateLimited(ApiError):
    status = 429


class Unavailable(ApiError):
    status = 503
