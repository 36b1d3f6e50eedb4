"""inference/jsonio.py: orjson's speed, the standard library's answers."""

from __future__ import annotations

import json
import math

import pytest

from inference import jsonio

SAME = [
    b'{"inputs": [[0.1, 2, -3e-7, 1e308]], "id": "x"}',
    '{"unicode": "\u00e9\u4e2d", "nested": {"a": [true, false, null]}}',
    b'{"nan": NaN, "inf": [Infinity, -Infinity]}',  # not RFC 8259, but json.loads reads it
    b'{"dup": 1, "dup": 2}',
    b'"\\ud800"',  # a lone surrogate
    b"  [1, 2]  ",
]


@pytest.mark.parametrize("text", SAME)
def test_parses_what_json_loads_parses_the_same_way(text):
    ours, theirs = jsonio.loads(text), json.loads(text)
    assert repr(ours) == repr(theirs)


def test_integers_past_64_bits_are_read_as_floats():
    assert jsonio.loads(b"[123456789012345678901234567890, 18446744073709551615]") == [
        1.2345678901234568e29, 18446744073709551615]


def test_nan_stays_a_float():
    assert math.isnan(jsonio.loads(b"[NaN]")[0])


@pytest.mark.parametrize("text", [b"", b"{", b'{"a": [1, 2}', b"\xff\xfe", b"[1,]", b"nope"])
def test_refuses_what_json_loads_refuses_with_its_message(text):
    with pytest.raises(ValueError) as ours:
        jsonio.loads(text)
    with pytest.raises(ValueError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("value", [
    {"outputs": [[0.1, 2.0, -3e-07, 1e308, 5e-324]], "id": "x", "version": 1},
    {"unicode": "\u00e9\u4e2d", "nested": {"a": [True, False, None]}, "text": "null and NaN"},
    [float(v) / 7 for v in range(300)],
])
def test_dumps_writes_what_json_dumps_means(value):
    assert json.loads(jsonio.dumps(value)) == json.loads(json.dumps(value)) == value


def test_dumps_keeps_the_standard_librarys_non_finite_tokens():
    # orjson would write null; clients until now got NaN / Infinity (and read them back as floats).
    value = {"outputs": [[1.0, float("nan")], [float("inf"), -float("inf")]], "label": None}
    assert jsonio.dumps(value) == json.dumps(value, separators=(",", ":")).encode()
    out = json.loads(jsonio.dumps(value))["outputs"]
    assert math.isnan(out[0][1]) and out[1] == [math.inf, -math.inf]
