"""app/core/csvfile.py: no cell a spreadsheet would run as a formula, numbers left as numbers."""

from __future__ import annotations

import csv
import io

from hypothesis import given
from hypothesis import strategies as st

from app.core.csvfile import TRIGGERS, csv_cell, csv_writer

PAYLOADS = ["=cmd|' /C calc'!A0", "+SUM(1;2)", "@HYPERLINK(\"http://evil.example\",\"x\")", "-2+3+cmd|' /C calc'!A0",
            "\tfoo", "\r=1+1", "\n=1", "\x00=1", "  =1+1", "\uff1d1+1", "\uff0bSUM(1)", "\uff0d1+1", "\uff20SUM(1)"]


def written(rows: list[list[object]]) -> list[list[str]]:
    buffer = io.StringIO(newline="")
    csv_writer(buffer).writerows(rows)
    return list(csv.reader(io.StringIO(buffer.getvalue(), newline="")))


def test_formula_payloads_are_quoted_as_text():
    [cells] = written([PAYLOADS])
    assert cells == ["'" + p for p in PAYLOADS]


def test_numbers_and_plain_text_are_untouched():
    [cells] = written([[0, -1, -0.25, 3.5e-7, 10**20, "-1", "+2.5", "-3e-2", ".5", "high", "a=b", "", None, True]])
    assert cells == ["0", "-1", "-0.25", "3.5e-07", str(10**20), "-1", "+2.5", "-3e-2", ".5", "high", "a=b", "", "",
                     "True"]


def test_non_finite_floats_are_text():
    # "-inf" in a cell reads as the formula =-inf.
    [cells] = written([[float("-inf"), float("inf"), float("nan")]])
    assert cells == ["'-inf", "inf", "nan"]


@given(st.text())
def test_no_written_cell_starts_a_formula(text):
    [cells] = written([[text]])
    [cell] = cells
    if cell.startswith("'") and csv_cell(text) != text:
        assert cell[1:] == text  # the quote is all that was added
    else:
        assert cell == text
        stripped = text.lstrip(" ")
        # Only a lone decimal number may start with a sign: a spreadsheet reads it as that number.
        assert not text or text[0] not in TRIGGERS or float(text) == float(text)
        assert not stripped or stripped[0] not in TRIGGERS or float(stripped) == float(stripped)


@given(st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)))
def test_finite_numbers_round_trip(number):
    [cells] = written([[number]])
    assert float(cells[0]) == float(number)
