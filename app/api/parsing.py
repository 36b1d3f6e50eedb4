"""Reading JSON request bodies under /api/v1: django-ninja's parser and the inference fast path both
go through `read_json` (app/core/jsonbody.py), so a body is refused for the same reasons with the same answers.

django-ninja's default parser is ``json.loads`` on the whole body, which recursed into a
``RecursionError`` on a deeply nested document; `inference.jsonio` refuses those (and bodies larger
than ``DATA_UPLOAD_MAX_MEMORY_SIZE``, also when no Content-Length announced them) before anything
recurses over them.
"""

from __future__ import annotations

from typing import cast

from django.conf import settings
from django.http import HttpRequest
from ninja.parser import Parser
from ninja.types import DictStrAny

from app.core.jsonbody import TOO_LARGE, InvalidJson, read_json, read_json_object

__all__ = ["TOO_LARGE", "InvalidJson", "JsonParser", "read_json", "read_json_object"]


class JsonParser(Parser):
    """django-ninja calls this for every JSON body; it wraps what this raises in ``HttpError(400)``
    with the error as the cause, which the API's handler for HttpError answers as the cause says."""

    def parse_body(self, request: HttpRequest) -> DictStrAny:
        return cast(DictStrAny, read_json_object(request.body, max_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
