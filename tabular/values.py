"""The value rules of tabular data, in one place: how a CSV cell or a JSON value reads as a typed value.

Profiling and reading a CSV (`tabular.profiling`), encoding raw JSON records for serving
(`tabular.features`) and histogramming recorded traffic for drift (`app.monitoring.drift`) all read
values through these functions, so a value means the same thing in training, serving and monitoring.

Public API::

    MISSING_TOKENS, TRUE_TOKENS, FALSE_TOKENS     # lower-case spellings
    ColumnKind                                     # numeric | categorical | boolean
    parse_number(text) -> float | None             # a CSV cell; ValueError if no number
    parse_bool(text) -> bool | None                # a CSV cell; ValueError if no truth value
    parse_text(text) -> str | None                 # a CSV cell of a categorical column
    parse_cell(kind, text) -> typed                # the three above by kind
    from_json(kind, value) -> typed                # a JSON value; ValueError saying what was expected
    from_json_lenient(kind, value) -> typed        # the same, None instead of an error
    is_missing(value) -> bool                      # None or a non-finite float

Rules:

- Surrounding whitespace of a value is insignificant.
- Missing, in any column: a blank value or one of `MISSING_TOKENS` (any case). In a numeric column a
  non-finite number (``nan``, ``inf``, ``1e999``) is missing too. In JSON, null is missing.
- Numbers: what `float` reads, except spellings with ``_`` (``1_000`` is an identifier in a CSV). In
  JSON a number must be a JSON number (not a string, not a boolean).
- Booleans: `TRUE_TOKENS` / `FALSE_TOKENS` (any case); in JSON also true/false and the integers 0/1.
- Categorical: the stripped text; in JSON a string.
- Typed values: numeric -> float, boolean -> bool, categorical -> str; None where missing.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "FALSE_TOKENS",
    "MISSING_TOKENS",
    "TRUE_TOKENS",
    "ColumnKind",
    "from_json",
    "from_json_lenient",
    "is_missing",
    "json_type",
    "parse_bool",
    "parse_cell",
    "parse_number",
    "parse_text",
]

# "none" is left out on purpose: it is a real category in many data sets ("no garage").
MISSING_TOKENS = frozenset({"", "?", "na", "n/a", "#n/a", "nan", "null"})
TRUE_TOKENS = frozenset({"true", "t", "yes", "y", "1"})
FALSE_TOKENS = frozenset({"false", "f", "no", "n", "0"})

Typed = float | bool | str | None


class ColumnKind(enum.StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    BOOLEAN = "boolean"


def parse_number(text: str) -> float | None:
    """The float `text` spells (None if missing or non-finite), or raise ValueError if it is no number."""
    token = text.strip()
    if token.lower() in MISSING_TOKENS:
        return None
    # float() also takes "1_000"; a CSV value with underscores is an identifier, not a number.
    if "_" in token:
        raise ValueError(f"not a number: {text!r}")
    value = float(token)
    return value if math.isfinite(value) else None


def parse_bool(text: str) -> bool | None:
    """The truth value `text` spells (None if missing), or raise ValueError."""
    token = text.strip().lower()
    if token in TRUE_TOKENS:
        return True
    if token in FALSE_TOKENS:
        return False
    if token in MISSING_TOKENS:
        return None
    raise ValueError(f"not a boolean: {text!r}")


def parse_text(text: str) -> str | None:
    """A categorical value: the stripped text, None if missing."""
    value = text.strip()
    return None if value.lower() in MISSING_TOKENS else value


def parse_cell(kind: ColumnKind, text: str) -> Typed:
    """A CSV cell of a column of `kind`; ValueError if it does not fit the kind."""
    if kind is ColumnKind.NUMERIC:
        return parse_number(text)
    if kind is ColumnKind.BOOLEAN:
        return parse_bool(text)
    return parse_text(text)


def from_json(kind: ColumnKind, value: Any) -> Typed:
    """A client's JSON value for a column of `kind`; ValueError with a message naming what was expected."""
    if value is None:
        return None
    if kind is ColumnKind.NUMERIC:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number or null, got {json_type(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise ValueError("number out of range") from None
        # Non-finite means missing, as in the CSV the model was trained on.
        return number if math.isfinite(number) else None
    if kind is ColumnKind.BOOLEAN:
        if isinstance(value, bool):
            return value
        if type(value) is int and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            token = value.strip().lower()
            if token in TRUE_TOKENS:
                return True
            if token in FALSE_TOKENS:
                return False
            if token in MISSING_TOKENS:
                return None
        shown = repr(value) if isinstance(value, str | int) and len(repr(value)) <= 40 else "(not shown)"
        raise ValueError(f"expected true, false or null, got {json_type(value)} {shown}")
    if not isinstance(value, str):
        raise ValueError(f"expected a string or null, got {json_type(value)}")
    return parse_text(value)


def from_json_lenient(kind: ColumnKind, value: Any) -> Typed:
    """`from_json`, with None (missing) for a value it would refuse."""
    try:
        return from_json(kind, value)
    except ValueError:
        return None


def is_missing(value: Any) -> bool:
    """Whether a typed value is missing: None, or a non-finite float."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value, for error messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__
