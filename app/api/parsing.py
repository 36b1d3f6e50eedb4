"""Reading JSON request bodies under /api/v1: django-ninja's parser and the inference fast path both
go through `read_json`, so a body is refused for the same reasons with the same answers.

django-ninja's default parser is ``json.loads`` on the whole body, which recursed into a
``RecursionError`` on a deeply nested document; `inference.jsonio` refuses those (and bodies larger
than ``DATA_UPLOAD_MAX_MEMORY_SIZE``, also when no Content-Length announced them) before anything
recurses over them.
"""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from django.http import HttpRequest
from ninja.parser import Parser
from ninja.types import DictStrAny

from app.core.errors import BodyNotObject, Invalid, PayloadTooLarge
from inference import jsonio

TOO_LARGE = "request body is larger than the limit for this endpoint"


class InvalidJson(Invalid):
    code = "invalid_json"


def read_json(body: bytes | str, *, max_bytes: int | None) -> Any:
    """The parsed body; `InvalidJson` (422) when it is not JSON or nests too deep, `PayloadTooLarge`
    (413) past ``max_bytes``."""
    try:
        return jsonio.loads(body, max_bytes=max_bytes)
    except jsonio.JsonTooLarge:
        raise PayloadTooLarge(TOO_LARGE) from None
    except jsonio.JsonTooDeep as exc:
        raise InvalidJson(f"request body is refused: {exc}") from None
    except ValueError as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc}") from None


def read_json_object(body: bytes | str, *, max_bytes: int | None) -> dict[str, Any]:
    """`read_json`, and `BodyNotObject` (422) for anything but an object: django-ninja reads the fields
    of a list, a string or ``null`` as all missing, so a body of ``[1]`` would pass as an empty patch."""
    data = read_json(body, max_bytes=max_bytes)
    if not isinstance(data, dict):
        raise BodyNotObject()
    return data


class JsonParser(Parser):
    """django-ninja calls this for every JSON body; it wraps what this raises in ``HttpError(400)``
    with the error as the cause, which the API's handler for HttpError answers as the cause says."""

    def parse_body(self, request: HttpRequest) -> DictStrAny:
        return cast(DictStrAny, read_json_object(request.body, max_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
