"""The one JSON reader for everything a client sends: orjson's speed, the standard library's
leniency, and explicit limits on depth and size.

A one-row request to a 256-feature model is about 3 KB of numbers; `json.loads` spent ~55 µs on it
and orjson ~5 µs (bench/RESULTS.md). orjson is strict RFC 8259, the standard library accepts more
(``NaN``, ``Infinity``, lone surrogates), so a document orjson refuses is parsed again by
`json.loads`: such bodies are read as before, and a body neither accepts raises `json.loads`'s
``ValueError`` with its message.

**Limits.** A document nested deeper than ``max_depth`` (default `MAX_DEPTH`) raises `JsonTooDeep`,
one longer than ``max_bytes`` raises `JsonTooLarge`; both are ``ValueError``s, so a caller that only
knows "malformed" still answers the client. Without the depth limit a hostile document breaks
whatever recurses over it later: `json.loads` itself raises ``RecursionError`` past ~1000 levels
(orjson stops at 1024), and so do ``repr``, ``json.dumps`` and copies of a few hundred levels
deep inside a request. No tensor a model takes, plus the request around it, comes close to 64.

Checking depth costs a count of brackets for most documents (fewer brackets than the limit cannot
nest deeper; a few µs for a one-row request, bench/OFFLOAD.md); those with more are walked level by
level, about as long again as their parse. Callers parse large bodies off the event loop.

One difference from `json.loads` remains, on purpose: an integer literal past 64 bits comes back as
a float (orjson's reading; JSON has one number type), where `json.loads` gives a Python int that no
tensor datatype holds. Checking for such literals costs as much as the parse saves.

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

__all__ = ["MAX_DEPTH", "JsonLimitExceeded", "JsonTooDeep", "JsonTooLarge", "dumps", "loads"]


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


MAX_DEPTH = 64


class JsonLimitExceeded(ValueError):
    """The document is deeper or larger than the reader allows (whether or not it is well formed)."""


class JsonTooDeep(JsonLimitExceeded):
    pass


class JsonTooLarge(JsonLimitExceeded):
    pass


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH, max_bytes: int | None = None) -> Any:
    """Parse ``data``; ``ValueError`` when it is not JSON, `JsonTooDeep` when arrays and objects nest
    more than ``max_depth`` levels (``[]`` is one), `JsonTooLarge` when it is longer than ``max_bytes``
    (UTF-8 bytes; None: no limit)."""
    if max_bytes is not None and _size(data) > max_bytes:
        raise JsonTooLarge(f"JSON document is larger than the limit of {max_bytes} bytes")
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith(("depth limit exceeded", "Recursion limit")):
            raise _too_deep(max_depth) from None
        try:
            document = json.loads(data)
        except RecursionError:
            raise _too_deep(max_depth) from None
    if _brackets(data) > max_depth and not _within_depth(document, max_depth):
        raise _too_deep(max_depth)
    return document


def _too_deep(max_depth: int) -> JsonTooDeep:
    return JsonTooDeep(f"JSON nested deeper than {max_depth} levels")


def _size(data: bytes | str) -> int:
    if isinstance(data, bytes) or data.isascii():  # isascii is O(1) on CPython's str
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


def _brackets(data: bytes | str) -> int:
    """An upper bound of the nesting depth: every level opens one bracket."""
    if isinstance(data, bytes):
        return data.count(b"[") + data.count(b"{")
    return data.count("[") + data.count("{")


def _within_depth(document: Any, max_depth: int) -> bool:
    # Breadth first, one level at a time; a container whose items are all scalars (a row of numbers)
    # costs one C-level pass over their types.
    level = [document] if isinstance(document, list | dict) else []
    for _ in range(max_depth):
        deeper: list[Any] = []
        for container in level:
            items = container.values() if isinstance(container, dict) else container
            kinds = set(map(type, items))
            if list in kinds or dict in kinds:
                deeper.extend(item for item in items if isinstance(item, list | dict))
        if not deeper:
            return True
        level = deeper
    return not level
