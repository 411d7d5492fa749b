"""Streaming readers for training and evaluation pairs/triplets in TSV, CSV and JSONL.

No torch here: validating a file must be fast and testable. Rows stream one at a time, so a file of
millions of lines costs one line of memory; every problem is reported as `PATH:LINE: message`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from embedops.errors import DataError

FORMATS = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
# Accepted JSONL key sets, as (anchor, positive, negative) key names; the seed's two come first.
JSON_KEYS = (
    ("text_a", "text_b", None),
    ("a", "b", None),
    ("anchor", "positive", "negative"),
    ("query", "positive", "negative"),
)
_HEADER_WORDS = {
    "text_a",
    "text_b",
    "a",
    "b",
    "anchor",
    "positive",
    "negative",
    "query",
    "sentence1",
    "sentence2",
    "question",
    "answer",
    "text1",
    "text2",
    "hard_negative",
    "passage",
}
_EXPECTED_COLUMNS = "2 columns (anchor, positive) or 3 (anchor, positive, hard negative)"
# The longest line a reader accepts: far above any text a model reads (512 tokens are a few KiB) and
# small enough that a line costs bounded memory however the file was made.
MAX_LINE_BYTES = 8 << 20


class Example(NamedTuple):
    anchor: str
    positive: str
    negative: str | None
    line: int


@dataclass
class ReadStats:
    """What a pass over a file found; filled in as the reader is consumed."""

    rows: int = 0
    with_negative: int = 0
    skipped: int = 0
    skipped_reasons: list[str] = field(default_factory=list)


def detect_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(path, 0, f"unknown file type {path.suffix!r}; expected .tsv, .csv or .jsonl")
    return fmt


def decoded_lines(path: Path, *, keep_ends: bool = False, start: int = 1) -> Iterator[tuple[int, str]]:
    """Lines decoded one by one, so a bad byte is reported with its line number.

    A line is read up to MAX_LINE_BYTES and no further: a file without newlines is refused at its first
    line, in bounded memory, instead of being read whole. `keep_ends` keeps each line's end, which a
    CSV reader needs to keep the newlines inside a quoted field. Lines before `start` are passed over
    undecoded (a worker reading one shard of a file).
    """
    with open(path, "rb") as handle:
        number = 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if number < start and len(raw) <= MAX_LINE_BYTES:
                continue
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(
                    path,
                    number,
                    f"line is longer than {MAX_LINE_BYTES >> 20} MiB; is this a text file with one record a line?",
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(path, number, f"not valid UTF-8 (byte {exc.start}); save the file as UTF-8") from exc
            if number == 1:
                text = text.removeprefix("\ufeff")
            yield number, text if keep_ends else text.rstrip("\r\n")


def _checked(path: Path, number: int, cells: list[str]) -> Example:
    if len(cells) not in (2, 3):
        raise DataError(path, number, f"found {len(cells)} column(s); expected {_EXPECTED_COLUMNS}")
    texts = [cell.strip() for cell in cells]
    return Example(texts[0], texts[1], texts[2] if len(texts) == 3 else None, number)


def _empty_text(path: Path, example: Example) -> DataError | None:
    for index, text in enumerate(example[:3]):
        if text == "":
            column = ("anchor", "positive", "negative")[index]
            return DataError(path, example.line, f"empty {column} text (column {index + 1})")
    return None


def _is_header(cells: list[str]) -> bool:
    return len(cells) in (2, 3) and all(cell.strip().lower() in _HEADER_WORDS for cell in cells)


def _tsv_rows(path: Path) -> Iterator[Example | DataError]:
    for number, text in decoded_lines(path):
        if not text.strip():
            continue
        cells = text.split("\t")
        if number == 1 and _is_header(cells):
            continue
        yield _try(_checked, path, number, cells)


def csv_records(path: Path, *, start: int = 1) -> Iterator[tuple[int, list[str] | DataError]]:
    """CSV records with the line each starts on; a quoted field may span lines and keeps its newlines.

    A malformed record comes as a DataError in place of its cells, so a caller may skip it and go on.
    `start` must be the first line of a record.
    """
    numbered = decoded_lines(path, keep_ends=True, start=start)
    current = [start - 1]

    def lines() -> Iterator[str]:
        for number, text in numbered:
            current[0] = number
            yield text

    reader = csv.reader(lines(), strict=True)  # an unclosed quote is an error, not the rest of the file
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, DataError(path, start, f"malformed CSV ({exc})")
            start = current[0] + 1
            continue
        line, start = start, current[0] + 1
        yield line, cells


def _csv_rows(path: Path) -> Iterator[Example | DataError]:
    first = True
    for line, cells in csv_records(path):
        if isinstance(cells, DataError):
            yield cells
            continue
        if not cells or not any(cell.strip() for cell in cells):
            continue
        if first and _is_header(cells):
            first = False
            continue
        first = False
        yield _try(_checked, path, line, cells)


def _json_example(path: Path, number: int, text: str) -> Example:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, number, f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(record, dict):
        raise DataError(path, number, "expected a JSON object per line")
    for anchor_key, positive_key, negative_key in JSON_KEYS:
        if anchor_key in record and positive_key in record:
            cells = [record[anchor_key], record[positive_key]]
            if negative_key and record.get(negative_key) is not None:
                cells.append(record[negative_key])
            for key, value in zip((anchor_key, positive_key, negative_key), cells, strict=False):
                if not isinstance(value, str):
                    raise DataError(path, number, f"key {key!r} must be a string, got {type(value).__name__}")
            return _checked(path, number, cells)
    expected = " or ".join("{" + ", ".join(k for k in keys if k) + "}" for keys in JSON_KEYS)
    raise DataError(path, number, f"missing keys: found {sorted(record)}; expected {expected}")


def _jsonl_rows(path: Path) -> Iterator[Example | DataError]:
    for number, text in decoded_lines(path):
        if text.strip():
            yield _try(_json_example, path, number, text)


def _try(parse, path: Path, number: int, value) -> Example | DataError:
    try:
        return parse(path, number, value)
    except DataError as exc:
        return exc


_ROWS = {"tsv": _tsv_rows, "csv": _csv_rows, "jsonl": _jsonl_rows}


class PairReader:
    """Iterate the examples of a pairs/triplets file, validating each line.

    Invalid lines raise DataError, or with `skip_invalid` are counted in `stats` and passed over.
    A file with no valid example is always an error: training on nothing is never what was meant.
    `allow_empty` lets empty texts through, for cleaning tools that drop and report them themselves.
    """

    MAX_REASONS = 20

    def __init__(self, path: str | Path, *, skip_invalid: bool = False, allow_empty: bool = False) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise DataError(self.path, 0, "is a directory; expected a .tsv, .csv or .jsonl file")
        if not self.path.is_file():
            raise DataError(self.path, 0, "no such file")
        self.format = detect_format(self.path)
        self.skip_invalid = skip_invalid
        self.allow_empty = allow_empty
        self.stats = ReadStats()

    def __iter__(self) -> Iterator[Example]:
        self.stats = ReadStats()
        for row in _ROWS[self.format](self.path):
            if isinstance(row, Example):
                empty = None if self.allow_empty else _empty_text(self.path, row)
                row = empty or self._mixed_shape(row) or row
            if isinstance(row, DataError):
                if not self.skip_invalid:
                    raise row
                self.stats.skipped += 1
                if len(self.stats.skipped_reasons) < self.MAX_REASONS:
                    self.stats.skipped_reasons.append(str(row))
                continue
            self.stats.rows += 1
            self.stats.with_negative += row.negative is not None
            yield row
        if self.stats.rows == 0:
            reason = "file is empty" if self.stats.skipped == 0 else f"all {self.stats.skipped} lines are invalid"
            raise DataError(self.path, 1, f"{reason}; expected {_EXPECTED_COLUMNS} per line")

    def _mixed_shape(self, row: Example) -> DataError | None:
        """Pairs after triplets (or the reverse): one training dataset cannot hold both."""
        has_negative = row.negative is not None
        if not self.stats.rows or has_negative == bool(self.stats.with_negative):
            return None
        return DataError(
            self.path,
            row.line,
            f"{'3' if has_negative else '2'} texts, but the lines before have "
            f"{'2' if has_negative else '3'}; a file holds either pairs or triplets, not both",
        )


def read_examples(path: str | Path, *, skip_invalid: bool = False) -> list[Example]:
    """All examples of a (small) file at once; use PairReader to stream a large one."""
    return list(PairReader(path, skip_invalid=skip_invalid))
