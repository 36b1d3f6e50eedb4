"""Streaming CSV reading and profiling for tabular training.

A dataset is a UTF-8 CSV file (a leading BOM is allowed) whose first line names the columns. Files
are read one physical line at a time, never whole: profiling keeps running statistics per column and
at most `MAX_TRACKED_DISTINCT` distinct values per column, so its memory does not grow with the rows.

Public API::

    profile_csv(path, *, max_columns=1000, categorical_top_k=20) -> DatasetProfile
    read_columns(path, profile, columns) -> dict[str, list]   # typed values, None where missing
    iter_rows(path, profile, columns) -> Iterator[tuple]       # the same, one row at a time
    preview(path, rows=20) -> list[dict[str, str]]             # raw strings of the first rows
    DatasetProfile.to_dict() / DatasetProfile.from_dict(data)  # JSON, e.g. stored with the upload
    DatasetError                                               # 422, names the line

Values read by the rules of `tabular.values` (shared with serving and monitoring). Beyond those:

- Surrounding whitespace of every name is insignificant. Blank lines are skipped.
- A column is ``boolean`` when its non-missing values are all in `TRUE_TOKENS` | `FALSE_TOKENS` (any
  case), so a 0/1 column is boolean; ``numeric`` when they all parse as numbers; ``categorical``
  otherwise, including a column with no value at all.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from tabular.errors import DatasetError
from tabular.values import FALSE_TOKENS, MISSING_TOKENS, TRUE_TOKENS, ColumnKind, parse_cell

__all__ = [
    "MAX_TRACKED_DISTINCT",
    "ColumnProfile",
    "DatasetError",
    "DatasetProfile",
    "iter_rows",
    "preview",
    "profile_csv",
    "read_columns",
]

MAX_TRACKED_DISTINCT = 1000
# One physical line longer than this is not a CSV row but a binary or corrupt file.
MAX_LINE_BYTES = 1 << 20

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ColumnProfile:
    """One column. `count` is the non-missing values; min/max/mean/std are set for numeric columns.

    `top` holds the most frequent values with their counts, most frequent first (ties by value), for
    categorical and boolean columns. A boolean column lists each truth value once, under its most
    common spelling in the file (``"1"``, ``"yes"``, ``"True"``...), so labels read as the user wrote
    them. `distinct` counts distinct values; when `distinct_capped`, the column had more than
    `MAX_TRACKED_DISTINCT` and both `distinct` and `top` cover only the first ones seen.
    """

    name: str
    kind: ColumnKind
    count: int
    missing: int
    distinct: int
    distinct_capped: bool = False
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    top: tuple[tuple[str, int], ...] = ()

    @property
    def bool_labels(self) -> tuple[str, str]:
        """(false spelling, true spelling) of a boolean column; ``("false", "true")`` where unseen."""
        false = next((v for v, _ in self.top if v.lower() in FALSE_TOKENS), "false")
        true = next((v for v, _ in self.top if v.lower() in TRUE_TOKENS), "true")
        return false, true

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": str(self.kind),
            "count": self.count,
            "missing": self.missing,
            "distinct": self.distinct,
            "distinct_capped": self.distinct_capped,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "std": self.std,
            "top": [{"value": v, "count": c} for v, c in self.top],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnProfile:
        try:
            return cls(
                name=str(data["name"]),
                kind=ColumnKind(data["kind"]),
                count=int(data["count"]),
                missing=int(data["missing"]),
                distinct=int(data["distinct"]),
                distinct_capped=bool(data.get("distinct_capped", False)),
                min=_optional_float(data.get("min")),
                max=_optional_float(data.get("max")),
                mean=_optional_float(data.get("mean")),
                std=_optional_float(data.get("std")),
                top=tuple((str(t["value"]), int(t["count"])) for t in data.get("top", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"malformed column profile: {exc!r}") from exc


@dataclass(frozen=True)
class DatasetProfile:
    columns: tuple[ColumnProfile, ...]
    rows: int

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnProfile:
        for column in self.columns:
            if column.name == name:
                return column
        raise DatasetError(f"unknown column {name!r}", details={"column": name})

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetProfile:
        if not isinstance(data, Mapping) or not isinstance(data.get("columns"), list):
            raise DatasetError("malformed dataset profile: expected an object with 'rows' and 'columns'")
        return cls(columns=tuple(ColumnProfile.from_dict(c) for c in data["columns"]), rows=int(data["rows"]))


def profile_csv(path: PathLike, *, max_columns: int = 1000, categorical_top_k: int = 20) -> DatasetProfile:
    """Read the whole file once and describe its columns; `DatasetError` for a file we cannot use."""
    with closing(_records(path, max_columns=max_columns)) as records:
        _, header = next(records)
        stats = [_ColumnStats() for _ in header]
        rows = 0
        for _, fields in records:
            rows += 1
            for column, value in zip(stats, fields, strict=True):
                column.add(value)
    return DatasetProfile(
        columns=tuple(s.finish(name, categorical_top_k) for name, s in zip(header, stats, strict=True)),
        rows=rows,
    )


def iter_rows(path: PathLike, profile: DatasetProfile, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    """Typed values of `columns`, one tuple per data row, checked against `profile`.

    Raises `DatasetError` if the file no longer matches the profile (other header, a value that does
    not fit its column's type, another row count): the profile is what training decisions rest on.
    """
    kinds = {c.name: c.kind for c in profile.columns}
    unknown = [c for c in columns if c not in kinds]
    if unknown:
        raise DatasetError(f"unknown column {unknown[0]!r}", details={"column": unknown[0]})
    with closing(_records(path, max_columns=1_000_000)) as records:
        line, header = next(records)
        if header != profile.names:
            raise DatasetError("the file's header differs from its profile; profile it again", line=line)
        index = {name: i for i, name in enumerate(header)}
        picks = [(index[c], c, kinds[c]) for c in columns]
        rows = 0
        for line, fields in records:
            rows += 1
            yield tuple(_typed(fields[i], name, kind, line) for i, name, kind in picks)
    if rows != profile.rows:
        raise DatasetError(f"the file has {rows} data rows but its profile says {profile.rows}; profile it again")


def read_columns(path: PathLike, profile: DatasetProfile, columns: Sequence[str]) -> dict[str, list[Any]]:
    """Typed values of `columns` as lists in file order (see `iter_rows`)."""
    out: dict[str, list[Any]] = {c: [] for c in columns}
    lists = [out[c] for c in columns]
    for row in iter_rows(path, profile, columns):
        for values, value in zip(lists, row, strict=True):
            values.append(value)
    return out


def preview(path: PathLike, rows: int = 20) -> list[dict[str, str]]:
    """The first `rows` data rows as raw (stripped) strings keyed by column; reads no further."""
    out: list[dict[str, str]] = []
    if rows <= 0:
        return out
    with closing(_records(path, max_columns=1_000_000)) as records:
        _, header = next(records)
        for _, fields in records:
            out.append(dict(zip(header, (f.strip() for f in fields), strict=True)))
            if len(out) >= rows:
                break
    return out


def _records(path: PathLike, *, max_columns: int) -> Generator[tuple[int, list[str]], None, None]:
    """Yield (line, stripped header names) first, then (line, fields) of each non-blank data record.

    `line` is where the record starts. Every way a file can be unusable raises `DatasetError` here,
    so profiling and reading refuse the same files with the same messages.
    """
    lines = _Lines(path)
    reader = csv.reader(lines, strict=True)
    try:
        end = header_end = rows = 0
        header: list[str] | None = None
        for fields in _guarded(reader, lines):
            start, end = end + 1, reader.line_num
            if header is None:
                header = _header(fields, start, max_columns)
                header_end = end
                yield start, header
                continue
            if not fields:
                continue
            if len(fields) != len(header):
                raise DatasetError(
                    f"line {start} has {len(fields)} fields but the header names {len(header)} columns",
                    line=start,
                    details={"fields": len(fields), "columns": len(header)},
                )
            rows += 1
            yield start, fields
        if header is None:
            raise DatasetError("the file is empty; its first line must name the columns", line=1)
        if not rows:
            raise DatasetError("the file has a header but no data rows", line=header_end + 1)
    finally:
        lines.close()


def _guarded(reader: Any, lines: _Lines) -> Iterator[list[str]]:
    """Rows of `reader`, with csv module errors turned into `DatasetError` naming the line."""
    while True:
        start = reader.line_num + 1
        try:
            fields: list[str] = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise DatasetError(f"line {start} opens a quoted field that is never closed", line=start) from exc
            raise DatasetError(f"line {lines.number} is not valid CSV: {exc}", line=lines.number) from exc
        yield fields


def _header(fields: list[str], line: int, max_columns: int) -> list[str]:
    names = [f.strip() for f in fields]
    if not names:
        raise DatasetError(f"line {line} is blank; the first line must name the columns", line=line)
    if not any(names):
        raise DatasetError(f"line {line} names no columns; the first line must be a header", line=line)
    if len(names) > max_columns:
        raise DatasetError(
            f"the header names {len(names)} columns; at most {max_columns} are allowed",
            line=line,
            details={"columns": len(names), "max_columns": max_columns},
        )
    for i, name in enumerate(names):
        if not name:
            raise DatasetError(f"column {i + 1} on line {line} has no name", line=line, details={"position": i + 1})
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DatasetError(
                f"duplicate column name {name!r} on line {line} (columns {seen[name] + 1} and {i + 1})",
                line=line,
                details={"column": name},
            )
        seen[name] = i
    if all(_is_number(n) for n in names):
        raise DatasetError(f"line {line} holds only numbers; the first line must name the columns", line=line)
    return names


class _Lines:
    """Decoded physical lines of a file, read in binary so a bad byte is reported with its line."""

    def __init__(self, path: PathLike) -> None:
        self._file = open(path, "rb")
        self.number = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = self._file.readline(MAX_LINE_BYTES + 1)
        if not raw:
            raise StopIteration
        self.number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise DatasetError(f"line {self.number} is longer than {MAX_LINE_BYTES} bytes", line=self.number)
        if b"\x00" in raw:
            raise DatasetError(
                f"line {self.number} contains NUL bytes: a binary file (or UTF-16 text), not a UTF-8 CSV",
                line=self.number,
            )
        try:
            return raw.decode("utf-8-sig" if self.number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"line {self.number} is not valid UTF-8 (byte {exc.start + 1} of the line); save the file as UTF-8",
                line=self.number,
                details={"byte": exc.start + 1},
            ) from exc

    def close(self) -> None:
        self._file.close()


class _ColumnStats:
    """Running statistics of one column; every value is offered to every possible kind."""

    __slots__ = ("capped", "counts", "high", "low", "m2", "maybe_bool", "maybe_number", "mean", "missing", "n", "seen")

    def __init__(self) -> None:
        self.missing = 0
        self.seen = 0  # non-missing in the generic sense; a numeric column also drops non-finite values
        self.maybe_bool = True
        self.maybe_number = True
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.low = math.inf
        self.high = -math.inf
        self.counts: dict[str, int] = {}
        self.capped = False

    def add(self, raw: str) -> None:
        value = raw.strip()
        lowered = value.lower()
        if lowered in MISSING_TOKENS:
            self.missing += 1
            return
        self.seen += 1
        if self.maybe_bool and lowered not in TRUE_TOKENS and lowered not in FALSE_TOKENS:
            self.maybe_bool = False
        if self.maybe_number:
            # tabular.values.parse_number inlined (the missing check is above): this runs once per cell.
            try:
                if "_" in value:
                    raise ValueError(value)
                number = float(value)
            except ValueError:
                self.maybe_number = False
            else:
                if math.isfinite(number):
                    # Welford: one pass, no catastrophic cancellation for large means.
                    self.n += 1
                    delta = number - self.mean
                    self.mean += delta / self.n
                    self.m2 += delta * (number - self.mean)
                    if number < self.low:
                        self.low = number
                    if number > self.high:
                        self.high = number
        counts = self.counts
        if value in counts:
            counts[value] += 1
        elif len(counts) < MAX_TRACKED_DISTINCT:
            counts[value] = 1
        else:
            self.capped = True

    def finish(self, name: str, top_k: int) -> ColumnProfile:
        if self.seen and self.maybe_bool:
            return ColumnProfile(
                name, ColumnKind.BOOLEAN, self.seen, self.missing, len(self._truths()), top=self._truths()
            )
        if self.seen and self.maybe_number:
            nonfinite = self.seen - self.n
            return ColumnProfile(
                name,
                ColumnKind.NUMERIC,
                self.n,
                self.missing + nonfinite,
                len(self.counts),
                self.capped,
                min=self.low if self.n else None,
                max=self.high if self.n else None,
                mean=self.mean if self.n else None,
                std=math.sqrt(self.m2 / self.n) if self.n else None,
            )
        top = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))[:top_k]
        return ColumnProfile(
            name, ColumnKind.CATEGORICAL, self.seen, self.missing, len(self.counts), self.capped, top=tuple(top)
        )

    def _truths(self) -> tuple[tuple[str, int], ...]:
        out = []
        for tokens in (TRUE_TOKENS, FALSE_TOKENS):
            spellings = sorted(
                ((v, c) for v, c in self.counts.items() if v.lower() in tokens), key=lambda i: (-i[1], i[0])
            )
            if spellings:
                out.append((spellings[0][0], sum(c for _, c in spellings)))
        return tuple(sorted(out, key=lambda item: (-item[1], item[0])))


def _typed(raw: str, column: str, kind: ColumnKind, line: int) -> Any:
    try:
        return parse_cell(kind, raw)
    except ValueError:
        raise DatasetError(
            f"line {line}: {raw.strip()!r} in column {column!r} is not {kind}; the file changed since it was profiled",
            line=line,
            details={"column": column},
        ) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
