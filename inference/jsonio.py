"""JSON for the request path: orjson's speed with the standard library's leniency and output.

A one-row request to a 256-feature model is about 3 KB of numbers; `json.loads` spent ~55 µs on it
and orjson ~5 µs (bench/RESULTS.md). orjson is strict RFC 8259, the standard library accepts more
(``NaN``, ``Infinity``, lone surrogates), so a document orjson refuses is parsed again by
`json.loads`: such bodies are read as before, and a body neither accepts raises `json.loads`'s
``ValueError`` with its message.

One difference remains, on purpose: an integer literal past 64 bits comes back as a float (orjson's
reading; JSON has one number type), where `json.loads` gives a Python int that no tensor datatype
holds. Checking for such literals costs as much as the parse saves.

`dumps` writes answers: orjson's bytes (a one-row V2 answer took `json.dumps` ~35 µs, mostly
`float.__repr__`, and orjson ~2 µs), except where the two differ in meaning. orjson writes NaN and
±Infinity as ``null``; the standard library writes the tokens ``NaN`` / ``Infinity``, which is what
clients got until now (Python's and JavaScript's lenient parsers read them back as numbers). So an
answer in which orjson wrote a ``null`` is checked for non-finite floats, and if it holds any it is
written by `json.dumps` as before. Otherwise only formatting differs (non-ASCII is written as UTF-8
rather than escaped; numbers are the same shortest round-trip values).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """Compact JSON of ``value`` (dicts, lists, str, int, float, bool, None), as `json.dumps` means it."""
    data = orjson.dumps(value)
    if b"null" in data and _has_nonfinite(value):
        return json.dumps(value, separators=(",", ":")).encode()
    return data


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_nonfinite(v) for v in value)
    return False


def loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
