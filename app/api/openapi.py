"""Error responses in the OpenAPI document: every status an operation can answer, with the envelope schema.

The statuses every operation of a kind can answer are added here, in one place, from what the operation
takes (`common_errors`): 401 behind bearer auth, 404 with a path parameter, 422 with any parameter or body,
413 with a body, 400 with a multipart body. What only some routes answer (403 role checks, 409 conflicts,
429, 503, 504, 507) each route names next to its success response: ``response={201: ModelOut, **errors(403, 409)}``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from ninja import Schema
from ninja.openapi.schema import BODY_CONTENT_TYPES, REF_TEMPLATE, OpenAPISchema
from ninja.operation import Operation
from ninja.schema import NinjaGenerateJsonSchema
from ninja_extra import NinjaExtraAPI
from pydantic import Field

DESCRIPTIONS = {
    400: "The request could not be read (a malformed multipart body)",
    401: "No credential, or a malformed, expired or revoked one (`WWW-Authenticate: Bearer`)",
    403: "The caller's role or ownership does not allow this",
    404: "No such object, or one the caller cannot see (the two are not told apart)",
    409: "Conflicts with the current state",
    413: "The request body is larger than this endpoint accepts",
    415: "The request body is not of a media type this endpoint reads",
    422: "The request is well-formed but invalid; `details` says where",
    429: "Too many requests; retry after `Retry-After` seconds",
    503: "Temporarily unable to serve (queue full, draining, a dependency down); retry after `Retry-After`",
    504: "The request's deadline passed before it was served",
    507: "The server's storage is full; nothing was stored (`insufficient_storage`)",
}


class ErrorDetail(Schema):
    code: str = Field(description="Stable machine-readable name of the error, e.g. `not_found`")
    message: str = Field(description="What went wrong, for a person")
    details: Any = Field(description="Where and why, when known (an object, a list of field errors, or null)")


class ErrorOut(Schema):
    """The one error body of the API: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorDetail


def errors(*statuses: int) -> dict[int, type[ErrorOut]]:
    """Response entries for the statuses this route answers beyond those `common_errors` adds."""
    unknown = set(statuses) - DESCRIPTIONS.keys()
    assert not unknown, f"no description for {sorted(unknown)}"
    return dict.fromkeys(statuses, ErrorOut)


def _has_body(operation: Operation) -> bool:
    return any(m.__ninja_param_source__ in BODY_CONTENT_TYPES for m in operation.models)


def _has_multipart(operation: Operation) -> bool:
    return any(m.__ninja_param_source__ in ("file", "form") for m in operation.models)


def common_errors(operation: Operation) -> set[int]:
    """The error statuses any operation shaped like this one can answer."""
    statuses: set[int] = set()
    if operation.auth_callbacks:
        statuses.add(401)
    if "{" in operation.path:
        statuses.add(404)
    if operation.models:
        statuses.add(422)
    if _has_body(operation):
        statuses.add(413)
    if _has_multipart(operation):
        statuses.add(400)
    return statuses


JSON_QUERY = "x-json-query"


def json_query(**schemas: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose named query parameters carry JSON (``?config={"a":1}``):
    the document declares them with ``content: application/json`` and these schemas, so clients and
    fuzzers send JSON there rather than any string."""
    return {JSON_QUERY: schemas}


class _Schema(OpenAPISchema):
    def operation_parameters(self, operation: Operation) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().operation_parameters(operation)
        as_json = (operation.openapi_extra or {}).get(JSON_QUERY, {})
        for parameter in parameters:
            if parameter["in"] == "query" and parameter["name"] in as_json:
                del parameter["schema"]
                parameter["content"] = {"application/json": {"schema": as_json[parameter["name"]]}}
        return parameters

    def operation_details(self, operation: Operation) -> dict[str, Any]:
        details: dict[str, Any] = super().operation_details(operation)
        details.pop(JSON_QUERY, None)  # said in the parameters themselves
        return details

    def responses(self, operation: Operation) -> dict[int, Any]:
        result = super().responses(operation)
        for status in sorted(common_errors(operation) | {s for s in result if s >= 400}):
            result[status] = {
                "description": DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
                "content": {"application/json": {"schema": self._error_schema()}},
            }
        return dict(sorted(result.items()))

    def _error_schema(self) -> dict[str, str]:
        name = ErrorOut.__name__
        if name not in self.schemas:
            schema = ErrorOut.model_json_schema(ref_template=REF_TEMPLATE, schema_generator=NinjaGenerateJsonSchema,
                                                mode="serialization")
            self.add_schema_definitions(schema.pop("$defs", {}))
            self.schemas[name] = schema
        return {"$ref": REF_TEMPLATE.format(model=name)}


class TorchwireAPI(NinjaExtraAPI):
    """NinjaExtraAPI whose OpenAPI document declares every error status with the envelope schema."""

    def get_openapi_schema(self, *, path_prefix: str | None = None,
                           path_params: dict[str, Any] | None = None) -> OpenAPISchema:
        if path_prefix is None:
            path_prefix = self.get_root_path(path_params or {})
        return _Schema(self, path_prefix)
