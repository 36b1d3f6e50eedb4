"""The one CSV writer of the service: every cell that a spreadsheet would read as a formula is made text.

A cell is neutralised (OWASP "CSV injection", ASVS 1.2.10) by prefixing a single quote when it starts with
``=``, ``+``, ``-``, ``@``, a tab, CR, LF or NUL, or their full-width forms (U+FF1D, U+FF0B, U+FF0D,
U+FF20, which some spreadsheet locales also read as formulas), also after leading spaces. Spreadsheets show
the quote as a "text" marker; other readers see it, which is the price of never running a formula.

Negative numbers: numbers the service computes (``int``/``float``, ``-0.25``) are written as numbers,
untouched, and so is a string that is one plain decimal number (``"-1"``, ``"+2.5e-3"``), such as a class
label taken from training data: a spreadsheet reads it as that number, never as a formula, since a lone
number literal calls nothing. Every other string with a trigger, ``-1+cmd|'/C calc'!A0`` included, is
escaped. Non-finite floats are written as text (``-inf`` would read as a formula).

ruff (TID251 in pyproject.toml) refuses ``csv.writer`` / ``csv.DictWriter`` anywhere else.
"""

from __future__ import annotations

import csv
import math
import numbers
import re
from collections.abc import Iterable
from typing import IO, Any

TRIGGERS = frozenset("=+-@\t\r\n\x00\uff1d\uff0b\uff0d\uff20")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

__all__ = ["SafeCsvWriter", "csv_cell", "csv_writer"]


def csv_cell(value: object) -> object:
    """``value`` as it must be written: finite numbers as they are, strings neutralised if needed."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, numbers.Real):
        if math.isfinite(float(value)):
            return value
        value = str(float(value))
    text = value if isinstance(value, str) else str(value)
    if not text or _NUMBER.fullmatch(text):
        return text
    if text[0] in TRIGGERS or text.lstrip(" ")[:1] in TRIGGERS:
        return "'" + text
    return text


class SafeCsvWriter:
    """``csv.writer`` with every cell passed through `csv_cell` (RFC 4180 quoting, ``\\r\\n`` rows)."""

    def __init__(self, fh: IO[str]) -> None:
        self._writer = csv.writer(fh)  # noqa: TID251 - the one place that may

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([csv_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(fh: IO[str]) -> SafeCsvWriter:
    """The writer for every CSV the service produces; open ``fh`` with ``newline=""``."""
    return SafeCsvWriter(fh)
