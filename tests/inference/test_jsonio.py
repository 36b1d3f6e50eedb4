"""inference/jsonio.py: orjson's speed, the standard library's answers, and depth and size limits."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- limits -------------------------------------------------------------------------------------

SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(
    alphabet=st.sampled_from('ab[]{}",:\\ \u00e9'), max_size=8)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                                          max_size=4), max_leaves=40)


def depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def nested(levels: int, kind: str = "list") -> str:
    if kind == "list":
        return "[" * levels + "]" * levels
    return '{"a":' * levels + "1" + "}" * levels


@settings(max_examples=400, deadline=None)
@given(value=VALUES, limit=st.integers(0, 8), as_bytes=st.booleans())
def test_refuses_exactly_the_documents_deeper_than_the_limit(value, limit, as_bytes):
    text = json.dumps(value)
    data = text.encode() if as_bytes else text
    if depth(value) > limit:
        with pytest.raises(jsonio.JsonTooDeep):
            jsonio.loads(data, max_depth=limit)
    else:
        assert jsonio.loads(data, max_depth=limit) == json.loads(text)


@pytest.mark.parametrize("kind", ["list", "object"])
@pytest.mark.parametrize("levels", [1, 63, 64, 65, 200, 1023, 1024, 1025, 10_000, 100_000])
def test_depth_limit_at_every_scale(kind, levels):
    text = nested(levels, kind)
    if levels <= jsonio.MAX_DEPTH:
        assert depth(jsonio.loads(text)) == levels
    else:
        with pytest.raises(jsonio.JsonTooDeep, match="deeper than 64 levels"):
            jsonio.loads(text)


@pytest.mark.parametrize("text", [
    "[NaN, " + nested(10_000) + "]",           # orjson refuses the NaN first; json.loads would recurse
    '["\\ud800", ' + nested(3_000) + "]",       # a lone surrogate: the same fallback
    "[" * 100_000,                              # deep and unterminated
])
def test_deep_documents_behind_what_orjson_refuses_are_too_deep_not_a_recursion_error(text):
    with pytest.raises(jsonio.JsonTooDeep):
        jsonio.loads(text)


def test_brackets_inside_strings_do_not_count():
    text = json.dumps({"a": ["[" * 500, "]]]" * 100, "{" * 70]})
    assert jsonio.loads(text, max_depth=2)["a"][0] == "[" * 500


def test_a_wide_document_within_the_depth_limit_is_read_whole():
    rows = [[float(i)] * 8 for i in range(1000)]
    assert jsonio.loads(json.dumps({"inputs": rows}))["inputs"] == rows


def test_size_limit_counts_utf8_bytes():
    assert jsonio.loads(b'"abcd"', max_bytes=6) == "abcd"
    with pytest.raises(jsonio.JsonTooLarge):
        jsonio.loads(b'"abcde"', max_bytes=6)
    with pytest.raises(jsonio.JsonTooLarge):
        jsonio.loads('"\u00e9\u00e9"', max_bytes=5)  # 4 characters, 6 bytes
    assert jsonio.loads('"\u00e9\u00e9"', max_bytes=6) == "\u00e9\u00e9"


def test_limit_errors_are_value_errors():
    assert issubclass(jsonio.JsonTooDeep, ValueError) and issubclass(jsonio.JsonTooLarge, ValueError)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_arbitrary_bytes_raise_nothing_but_value_error(data):
    try:
        jsonio.loads(data, max_depth=4)
    except ValueError:
        pass


@settings(max_examples=100, deadline=None)
@given(prefix=st.sampled_from(["", "[NaN,", '{"a":Infinity,"b":']), levels=st.integers(0, 3000),
       close=st.booleans())
def test_nesting_of_any_depth_answers_a_value_error_or_the_document(prefix, levels, close):
    text = prefix + "[" * levels + ("]" * levels if close else "") + ("]" if prefix.startswith("[") else "")
    text += "}" if prefix.startswith("{") else ""
    try:
        jsonio.loads(text)
    except ValueError:
        pass
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
