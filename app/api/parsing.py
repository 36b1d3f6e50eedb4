"""How the API reads a JSON request body."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.parser import Parser

from app.core.errors import BodyNotObject


class JsonObjectParser(Parser):
    """Every JSON body of the API is an object. ninja reads the fields of a list, a string or ``null`` as all
    missing, so a body of ``[1]`` passed as an empty patch; here it is refused before any field is read."""

    def parse_body(self, request: HttpRequest) -> Any:
        data = super().parse_body(request)
        if not isinstance(data, dict):
            raise BodyNotObject()
        return data
