"""JSON parsing for the request path: orjson's speed with the standard library's leniency.

A one-row request to a 256-feature model is about 3 KB of numbers; `json.loads` spent ~55 µs on it
and orjson ~5 µs (bench/RESULTS.md). orjson is strict RFC 8259, the standard library accepts more
(``NaN``, ``Infinity``, lone surrogates), so a document orjson refuses is parsed again by
`json.loads`: such bodies are read as before, and a body neither accepts raises `json.loads`'s
``ValueError`` with its message.

One difference remains, on purpose: an integer literal past 64 bits comes back as a float (orjson's
reading; JSON has one number type), where `json.loads` gives a Python int that no tensor datatype
holds. Checking for such literals costs as much as the parse saves.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
