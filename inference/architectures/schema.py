"""A small JSON-Schema subset for architecture configs, with normalisation.

Supported keywords: ``type`` (object, array, integer, number, string, boolean, null, or a list of
them), ``properties``, ``required``, ``additionalProperties`` (boolean), ``items``, ``minItems``,
``maxItems``, ``enum``, ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum`` and
``default``. `check` returns a new config with defaults filled in and numbers made floats, so two
spellings of one config normalise to the same dict (and to the same artifact expectations).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, NoReturn

from inference.errors import ArchitectureError


def check(schema: Mapping[str, Any], value: Any, *, architecture: str) -> Any:
    return _check(schema, value, "config", architecture)


def _check(schema: Mapping[str, Any], value: Any, path: str, arch: str) -> Any:
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else list(types)
        kind = next((t for t in allowed if _is(t, value)), None)
        if kind is None:
            _fail(arch, path, f"must be {' or '.join(allowed)}, got {_json_type(value)}")
    else:
        kind = _json_type(value)

    if "enum" in schema and value not in schema["enum"]:
        _fail(arch, path, f"must be one of {', '.join(repr(v) for v in schema['enum'])}, got {value!r}")

    if kind in ("integer", "number"):
        bounds = (
            ("minimum", lambda v, b: v >= b, ">="),
            ("maximum", lambda v, b: v <= b, "<="),
            ("exclusiveMinimum", lambda v, b: v > b, ">"),
            ("exclusiveMaximum", lambda v, b: v < b, "<"),
        )
        for key, ok, symbol in bounds:
            if key in schema and not ok(value, schema[key]):
                _fail(arch, path, f"must be {symbol} {schema[key]}, got {value!r}")
        return float(value) if kind == "number" else value

    if kind == "array":
        if "minItems" in schema and len(value) < schema["minItems"]:
            _fail(arch, path, f"needs at least {schema['minItems']} items, got {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            _fail(arch, path, f"takes at most {schema['maxItems']} items, got {len(value)}")
        items = schema.get("items")
        if items is None:
            return copy.deepcopy(value)
        return [_check(items, v, f"{path}[{i}]", arch) for i, v in enumerate(value)]

    if kind == "object":
        properties: Mapping[str, Any] = schema.get("properties", {})
        out: dict[str, Any] = {}
        for key in schema.get("required", ()):
            if key not in value:
                _fail(arch, f"{path}.{key}", "is required")
        for key, item in value.items():
            if key in properties:
                out[key] = _check(properties[key], item, f"{path}.{key}", arch)
            elif schema.get("additionalProperties", True) is False:
                known = ", ".join(properties) or "none"
                _fail(arch, f"{path}.{key}", f"is not a known field (known: {known})")
            else:
                out[key] = copy.deepcopy(item)
        for key, prop in properties.items():
            if key not in out and "default" in prop:
                out[key] = copy.deepcopy(prop["default"])
        return out

    return value


def _is(kind: str, value: Any) -> bool:
    if kind == "integer":
        return type(value) is int
    if kind == "number":
        return type(value) in (int, float) and math.isfinite(value)
    return _json_type(value) == kind


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _fail(arch: str, path: str, message: str) -> NoReturn:
    field = path.removeprefix("config").removeprefix(".")
    raise ArchitectureError(f"{arch}: {path} {message}", details={"architecture": arch, "field": field or None})
