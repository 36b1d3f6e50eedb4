"""Reading a JSON request body with the API's limits: the /api parser (app/api/parsing.py) and the
inference fast path both use `read_json`, so a body is refused for the same reasons with the same answers.

A plain function of the body, no django-ninja: `app.api` (the edge) and `app.serving.fastpath` sit above it.
"""

from __future__ import annotations

from typing import Any

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
