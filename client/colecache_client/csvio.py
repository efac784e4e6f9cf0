"""Observations to and from CSV files (stdlib csv only), in the format GET /studies/{id}/observations?format=csv
writes, so an export imports back unchanged.

Columns: `spec` and `value` are required, `metadata` is optional (a JSON object; an empty cell is none), any
other column is ignored. A spec cell whose text starts with '[' or '{' is JSON (an op list, a graph, a
`{"code": ...}` wrapper); any other text is the spec string itself (an NB201 cell, a DARTS genotype).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from .types import Observation

COLUMNS = ("spec", "value", "metadata", "arch")


@contextmanager
def _opened(path_or_file: str | os.PathLike | IO[str], mode: str) -> Iterator[tuple[IO[str], str]]:
    """(text stream, name for messages): a path is opened (and closed) here, a stream is used as it is."""
    if isinstance(path_or_file, (str, os.PathLike)):
        # utf-8-sig: a byte-order mark (spreadsheets write one) is not part of the first column's name.
        encoding = "utf-8-sig" if "r" in mode else "utf-8"
        with open(path_or_file, mode, encoding=encoding, newline="") as stream:
            yield stream, os.fspath(path_or_file)
    else:
        yield path_or_file, str(getattr(path_or_file, "name", "<csv>"))


JSON_STARTS = ("[", "{", '"')  # a cell starting with one of these (after spaces) is JSON


def parse_spec_cell(text: str) -> Any:
    """A spec from its CSV cell: JSON when the text starts with '[', '{' or '"', else the text itself.

    Raises ValueError (without a location) when such a cell is not valid JSON."""
    if text.lstrip()[:1] in JSON_STARTS:
        try:
            return json.loads(text, parse_constant=_no_constant)
        except ValueError as exc:
            raise ValueError(f"spec starts with {text.lstrip()[0]!r} but is not valid JSON ({exc})") from None
    return text


def format_spec_cell(spec: Any) -> str:
    """A spec as its CSV cell: a string as it is, anything else as compact JSON; a string that would
    read back as JSON (it starts with '[', '{' or '"') is written as a JSON string, so every cell
    parses back to the exact spec (`parse_spec_cell`)."""
    if isinstance(spec, str) and spec.lstrip()[:1] not in JSON_STARTS:
        return spec
    return json.dumps(spec, separators=(",", ":"), ensure_ascii=False)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number (JSON has no NaN or Infinity)")


def iter_observations_csv(
    path_or_file: str | os.PathLike | IO[str],
    *,
    spec_column: str = "spec",
    value_column: str = "value",
    metadata_column: str | None = "metadata",
) -> Iterator[tuple[int, Observation]]:
    """(line number, observation) for each data row, for callers that report per-row problems by line.

    Raises ValueError naming the file and line, and why, at the first bad row (see `read_observations_csv`).
    The line number is that of the row's last line (a quoted cell may span several)."""
    with _opened(path_or_file, "r") as (stream, name):
        reader = csv.DictReader(stream)
        header = reader.fieldnames
        if not header:
            raise ValueError(f"{name}: line 1: no header row (the file is empty)")
        missing = [c for c in (spec_column, value_column) if c not in header]
        if missing:
            names = " and ".join(repr(c) for c in missing)
            raise ValueError(
                f"{name}: line 1: no {names} column in the header (columns: {', '.join(map(repr, header))}); "
                "name other columns as the spec / value columns (CLI: --spec-column / --value-column)"
            )
        with_metadata = metadata_column is not None and metadata_column in header
        for row in reader:
            line = reader.line_num

            def bad(reason: str, line: int = line) -> ValueError:
                return ValueError(f"{name}: line {line}: {reason}")

            if None in row:  # csv.DictReader's key for cells past the header's columns
                raise bad(f"{len(header) + len(row[None])} cells, but the header has {len(header)} columns")

            spec_text = row.get(spec_column)
            if spec_text is None or not spec_text.strip():
                raise bad(f"the {spec_column!r} cell is empty" if spec_text is not None else "too few cells")
            try:
                spec = parse_spec_cell(spec_text)
            except ValueError as exc:
                raise bad(str(exc)) from None
            value_text = row.get(value_column)
            if value_text is None or not value_text.strip():
                raise bad(f"the {value_column!r} cell is empty" if value_text is not None else "too few cells")
            try:
                value = float(value_text)
            except ValueError:
                raise bad(f"value {value_text!r} is not a number") from None
            if not math.isfinite(value):
                raise bad(f"value {value_text!r} is not a finite number")
            metadata = None
            if with_metadata:
                meta_text = row.get(metadata_column) or ""
                if meta_text.strip():
                    try:
                        metadata = json.loads(meta_text, parse_constant=_no_constant)
                    except (json.JSONDecodeError, ValueError) as exc:
                        raise bad(f"metadata is not valid JSON ({exc})") from None
                    if not isinstance(metadata, dict):
                        raise bad(f"metadata must be a JSON object, not {type(metadata).__name__} {meta_text!r}")
            yield line, Observation(spec, value, metadata)


def read_observations_csv(
    path_or_file: str | os.PathLike | IO[str],
    *,
    spec_column: str = "spec",
    value_column: str = "value",
    metadata_column: str | None = "metadata",
) -> list[Observation]:
    """Every observation of a CSV file (a path or an open text stream), checked before any is returned.

    Raises ValueError "FILE: line N: why" for a missing spec/value column, an empty cell, a value that is
    not a finite number, metadata that is not a JSON object, or a spec cell starting with '[' / '{' that is
    not valid JSON. The metadata column may be absent (then no row has metadata); `metadata_column=None`
    ignores it. Blank lines are skipped."""
    return [
        observation
        for _, observation in iter_observations_csv(
            path_or_file, spec_column=spec_column, value_column=value_column, metadata_column=metadata_column
        )
    ]


def write_observations_csv(
    path_or_file: str | os.PathLike | IO[str], observations: Iterable[Observation | tuple | dict]
) -> int:
    """Write observations as CSV (spec,value,metadata,arch), in the export's cell format; returns the rows written.

    Values are written with repr, so they read back exactly."""
    count = 0
    with _opened(path_or_file, "w") as (stream, _):
        writer = csv.writer(stream)
        writer.writerow(COLUMNS)
        for item in observations:
            if isinstance(item, tuple):
                item = Observation(*item)
            elif isinstance(item, dict):
                item = Observation(item["spec"], item["value"], item.get("metadata"), item.get("arch"))
            metadata = "" if item.metadata is None else json.dumps(item.metadata, separators=(",", ":"))
            writer.writerow([format_spec_cell(item.spec), repr(float(item.value)), metadata, item.arch or ""])
            count += 1
    return count
