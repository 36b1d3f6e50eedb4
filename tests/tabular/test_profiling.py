from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.errors import InferenceError
from tabular.profiling import (
    MAX_TRACKED_DISTINCT,
    DatasetError,
    DatasetProfile,
    iter_rows,
    preview,
    profile_csv,
    read_columns,
)
from tabular.values import ColumnKind, parse_bool, parse_number


def write(tmp_path: Path, content: str | bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


MIXED = (
    "age, city ,smoker,score,flag\n"
    "31,Paris,yes,1.5,1\n"
    "45,Lyon,No,nan,0\n"
    ",Paris,Y,inf,\n"
    "29, paris ,n,-inf,1\n"
    "52,NA,yes,2.5,1\n"
)


def test_profile_infers_kinds_counts_and_stats(tmp_path: Path) -> None:
    profile = profile_csv(write(tmp_path, MIXED))
    assert profile.rows == 5
    assert profile.names == ["age", "city", "smoker", "score", "flag"]
    age, city, smoker, score, flag = profile.columns

    assert age.kind is ColumnKind.NUMERIC
    assert (age.count, age.missing) == (4, 1)
    assert (age.min, age.max, age.mean) == (29.0, 52.0, 39.25)
    assert age.std == pytest.approx(math.sqrt(sum((v - 39.25) ** 2 for v in (31, 45, 29, 52)) / 4))

    assert city.kind is ColumnKind.CATEGORICAL
    assert (city.count, city.missing) == (4, 1)  # "NA" is missing; " paris " is stripped
    assert city.top == (("Paris", 2), ("Lyon", 1), ("paris", 1))

    assert smoker.kind is ColumnKind.BOOLEAN
    assert smoker.top == (("yes", 3), ("No", 2))  # each truth value under its commonest spelling
    assert smoker.bool_labels == ("No", "yes")

    # Every non-finite number counts as missing in a numeric column.
    assert score.kind is ColumnKind.NUMERIC
    assert (score.count, score.missing, score.min, score.max) == (2, 3, 1.5, 2.5)

    assert flag.kind is ColumnKind.BOOLEAN  # a 0/1 column is boolean
    assert (flag.count, flag.missing) == (4, 1)
    assert flag.bool_labels == ("0", "1")


def test_kind_boundaries(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "zero_one_float,mixed,with_two,empty,all_nan,text_bool\n0.0,1,0,,nan,true\n1.0,x,2,,inf,FALSE\n",
    )
    kinds = {c.name: c.kind for c in profile_csv(path).columns}
    assert kinds == {
        "zero_one_float": ColumnKind.NUMERIC,
        "mixed": ColumnKind.CATEGORICAL,
        "with_two": ColumnKind.NUMERIC,
        "empty": ColumnKind.CATEGORICAL,
        "all_nan": ColumnKind.NUMERIC,
        "text_bool": ColumnKind.BOOLEAN,
    }
    # "nan" is a missing token everywhere; "inf" parses as a (non-finite, so missing) number.
    all_nan = profile_csv(path).column("all_nan")
    assert (all_nan.count, all_nan.missing, all_nan.mean) == (0, 2, None)


def test_profile_to_dict_is_json_and_round_trips(tmp_path: Path) -> None:
    profile = profile_csv(write(tmp_path, MIXED))
    data = json.loads(json.dumps(profile.to_dict()))
    assert data["columns"][1]["kind"] == "categorical"
    assert data["columns"][1]["top"][0] == {"value": "Paris", "count": 2}
    assert DatasetProfile.from_dict(data) == profile


def test_bom_crlf_quoted_newlines_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, b'\xef\xbb\xbfid,note\r\n1,"two\r\nlines"\r\n\r\n2,plain\r\n\r\n')
    profile = profile_csv(path)
    assert profile.names == ["id", "note"]
    assert profile.rows == 2
    assert read_columns(path, profile, ["note"]) == {"note": ["two\r\nlines", "plain"]}


def test_top_k_and_distinct_cap(tmp_path: Path) -> None:
    values = [f"v{i}" for i in range(MAX_TRACKED_DISTINCT + 5)] + ["v3"] * 4
    path = write(tmp_path, "c\n" + "\n".join(values) + "\n")
    column = profile_csv(path, categorical_top_k=2).column("c")
    assert column.top == (("v3", 5), ("v0", 1))
    assert column.distinct == MAX_TRACKED_DISTINCT and column.distinct_capped


def test_read_columns_typed_values(tmp_path: Path) -> None:
    path = write(tmp_path, MIXED)
    profile = profile_csv(path)
    columns = read_columns(path, profile, ["smoker", "age", "city", "score"])
    assert list(columns) == ["smoker", "age", "city", "score"]
    assert columns["age"] == [31.0, 45.0, None, 29.0, 52.0]
    assert columns["city"] == ["Paris", "Lyon", "Paris", "paris", None]
    assert columns["smoker"] == [True, False, True, False, True]
    assert columns["score"] == [1.5, None, None, None, 2.5]
    assert next(iter_rows(path, profile, ["flag", "age"])) == (True, 31.0)


def test_read_columns_refuses_unknown_column_and_changed_file(tmp_path: Path) -> None:
    path = write(tmp_path, MIXED)
    profile = profile_csv(path)
    with pytest.raises(DatasetError, match="unknown column 'nope'"):
        read_columns(path, profile, ["nope"])
    write(tmp_path, MIXED.replace("31,Paris", "old,Paris"))
    with pytest.raises(DatasetError, match="changed since it was profiled") as info:
        read_columns(path, profile, ["age"])
    assert info.value.line == 2
    write(tmp_path, MIXED + "60,Nice,no,3,0\n")
    with pytest.raises(DatasetError, match="6 data rows but its profile says 5"):
        read_columns(path, profile, ["age"])
    write(tmp_path, MIXED.replace("age,", "years,"))
    with pytest.raises(DatasetError, match="header differs"):
        read_columns(path, profile, ["city"])


def test_preview_reads_only_the_first_rows(tmp_path: Path) -> None:
    # A ragged row past the preview is never reached.
    path = write(tmp_path, MIXED + "too,few\n")
    assert preview(path, 2) == [
        {"age": "31", "city": "Paris", "smoker": "yes", "score": "1.5", "flag": "1"},
        {"age": "45", "city": "Lyon", "smoker": "No", "score": "nan", "flag": "0"},
    ]
    assert preview(path, 0) == []


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (b"", 1, "the file is empty"),
        (b"\na,b\n1,2\n", 1, "line 1 is blank"),
        (b" , ,\n1,2,3\n", 1, "line 1 names no columns"),
        (b"a,,c\n1,2,3\n", 1, "column 2 on line 1 has no name"),
        (b"a,b,a\n1,2,3\n", 1, "duplicate column name 'a' on line 1"),
        (b"1,2.5,3\n4,5,6\n", 1, "holds only numbers"),
        (b"a,b\n1,2\n3,4,5\n", 3, "line 3 has 3 fields but the header names 2"),
        (b'a,b\n1,"two\nlines"\n\n3\n', 5, "line 5 has 1 fields"),
        (b"a,b\n1,2\n3,\xe9t\xe9\n", 3, "line 3 is not valid UTF-8"),
        (b"a,b\n1,\x002\n", 2, "line 2 contains NUL bytes"),
        ("a,b\n".encode("utf-16"), 1, "NUL bytes"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 1, "line 1 is not valid UTF-8"),
        (b"a,b\n", 2, "no data rows"),
        (b"a,b\n\n\r\n", 2, "no data rows"),
        (b'a,b\n1,2\n3,"open\n4,5\n', 3, "line 3 opens a quoted field that is never closed"),
        (b'a,b\n1,"x"y\n', 2, "line 2 is not valid CSV"),
    ],
)
def test_bad_files_are_refused_with_their_line(tmp_path: Path, content: bytes, line: int, message: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(DatasetError, match=message) as info:
        profile_csv(path)
    assert info.value.line == line
    assert info.value.details["line"] == line
    assert isinstance(info.value, InferenceError) and info.value.kind == "unprocessable"
    assert info.value.to_dict()["code"] == "invalid_dataset"


def test_too_many_columns_and_too_long_lines(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="5 columns; at most 4") as info:
        profile_csv(write(tmp_path, "a,b,c,d,e\n1,2,3,4,5\n"), max_columns=4)
    assert info.value.line == 1
    with pytest.raises(DatasetError, match="line 2 is longer than") as info:
        profile_csv(write(tmp_path, b"a\n" + b"x" * (2 << 20) + b"\n"))
    assert info.value.line == 2


def test_parse_helpers() -> None:
    assert parse_number(" 2.5 ") == 2.5
    assert parse_number("NaN") is None and parse_number("-inf") is None and parse_number("") is None
    with pytest.raises(ValueError):
        parse_number("1_000")
    assert parse_bool("Yes") is True and parse_bool("0") is False and parse_bool("n/a") is None
    with pytest.raises(ValueError):
        parse_bool("maybe")


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(finite, st.none()), min_size=1, max_size=40).filter(lambda v: any(x is not None for x in v)))
def test_numeric_profile_matches_a_direct_computation(tmp_path_factory: pytest.TempPathFactory, values: list) -> None:
    path = tmp_path_factory.mktemp("h") / "n.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "tag"])
        for v in values:
            writer.writerow(["" if v is None else repr(v), "t"])  # repr never spells a boolean token ("1.0")
    profile = profile_csv(path)
    column = profile.column("x")
    present = [v for v in values if v is not None]
    assert column.kind is ColumnKind.NUMERIC
    assert (column.count, column.missing) == (len(present), len(values) - len(present))
    assert (column.min, column.max) == (min(present), max(present))
    assert column.mean == pytest.approx(sum(present) / len(present), rel=1e-9, abs=1e-6)
    assert read_columns(path, profile, ["x"])["x"] == [None if v is None else float(v) for v in values]
