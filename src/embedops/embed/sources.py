"""Corpus passages as (id, text) records, streamed from BEIR, JSONL, TSV/CSV, plain text or Parquet.

Records come one at a time (Parquet in row batches), so a corpus of any size costs a bounded amount
of memory; a bad record is reported as PATH:LINE (Parquet: PATH:ROW).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from embedops.data.readers import csv_records, decoded_lines
from embedops.errors import DataError, MissingDependencyError

FORMATS = ("beir", "jsonl", "tsv", "csv", "text", "parquet")
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".csv": "csv", ".txt": "text", ".parquet": "parquet"}
# Parquet is read this many rows at a time: a few MiB of text, whatever the file's row groups are.
_PARQUET_BATCH_ROWS = 4096


class Passage(NamedTuple):
    id: str
    text: str
    line: int  # line (or Parquet row) the record starts on, 1-based


@dataclass(frozen=True)
class CorpusSource:
    """Where the passages are and which fields hold their ids and texts.

    `id_field` and `text_field` name JSON keys, Parquet columns or CSV/TSV header cells; `title_field`,
    when the record has it, is put before the text as BEIR's evaluation does (`""` turns that off).
    Without a header, a TSV/CSV row is `id<TAB>text`; a text file holds one passage per line, whose id
    is its line number.
    """

    path: Path
    format: str
    id_field: str = "_id"
    text_field: str = "text"
    title_field: str = "title"

    @property
    def id_names(self) -> tuple[str, ...]:
        """Keys an id is read from, in order: the default `_id` (BEIR) falls back to `id`."""
        return (self.id_field, "id") if self.id_field == "_id" else (self.id_field,)

    @property
    def files(self) -> list[Path]:
        """The files read, in reading order (a Parquet dataset may be a directory of files)."""
        if self.path.is_dir():
            return sorted(p for p in self.path.rglob("*.parquet") if p.is_file() and not p.name.startswith("."))
        return [self.path]

    def __iter__(self) -> Iterator[Passage]:
        return self.read()

    def read(self, start: int = 1) -> Iterator[Passage]:
        """Passages from the record at line (Parquet: row) `start` on; lines before it are not parsed."""
        readers = {
            "beir": self._jsonl,
            "jsonl": self._jsonl,
            "tsv": self._tsv,
            "csv": self._csv,
            "text": self._text,
            "parquet": self._parquet,
        }
        return readers[self.format](start)

    def _jsonl(self, start: int) -> Iterator[Passage]:
        for number, line in decoded_lines(self.path, start=start):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(self.path, number, f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(record, dict):
                raise DataError(self.path, number, "expected a JSON object per line")
            yield self._passage(record, self.path, number)

    def _passage(self, record: dict[str, Any], path: Path, number: int) -> Passage:
        ident = next((record[name] for name in self.id_names if name in record), None)
        if isinstance(ident, bool) or not isinstance(ident, (str, int)) or str(ident) == "":
            raise DataError(path, number, f"no {self.id_field!r} (a non-empty string or integer id) in the record")
        text = record.get(self.text_field)
        if not isinstance(text, str):
            raise DataError(path, number, f"no {self.text_field!r} string in the record (choose it with --text-field)")
        title = record.get(self.title_field) if self.title_field else None
        text = text.strip()
        if isinstance(title, str) and title.strip():
            text = f"{title.strip()} {text}".strip()
        return Passage(str(ident), text, number)

    def _columns(self, first_row: list[str]) -> tuple[int, int] | None:
        """(id, text) column positions when `first_row` is a header naming them, else None."""
        header = [cell.strip() for cell in first_row]
        id_name = next((name for name in self.id_names if name in header), None)
        if id_name is None or self.text_field not in header:
            return None
        return header.index(id_name), header.index(self.text_field)

    def _cells(
        self, rows: Iterator[tuple[int, list[str] | DataError]], first: tuple[int, list[str]] | None
    ) -> Iterator[Passage]:
        """Passages of TSV/CSV rows; `first` is the file's first row (and its line), a header or data."""
        named = self._columns(first[1]) if first is not None else None
        columns = named or (0, 1)
        header_line = first[0] if first is not None and named is not None else 0
        for number, cells in rows:
            if isinstance(cells, DataError):
                raise cells
            if number == header_line or not cells or not any(cell.strip() for cell in cells):
                continue
            if len(cells) <= max(columns):
                raise DataError(self.path, number, f"found {len(cells)} column(s); expected id and text")
            ident, text = cells[columns[0]].strip(), cells[columns[1]].strip()
            if not ident:
                raise DataError(self.path, number, "empty id")
            yield Passage(ident, text, number)

    def _first_row(self, rows: Iterator[tuple[int, list[str] | DataError]]) -> tuple[int, list[str]] | None:
        for number, cells in rows:
            if isinstance(cells, list) and any(cell.strip() for cell in cells):
                return number, cells
        return None

    def _tsv(self, start: int) -> Iterator[Passage]:
        def rows(begin: int) -> Iterator[tuple[int, list[str] | DataError]]:
            return ((number, line.split("\t")) for number, line in decoded_lines(self.path, start=begin))

        return self._cells(rows(start), self._first_row(rows(1)))

    def _csv(self, start: int) -> Iterator[Passage]:
        return self._cells(csv_records(self.path, start=start), self._first_row(csv_records(self.path)))

    def _text(self, start: int) -> Iterator[Passage]:
        for number, line in decoded_lines(self.path, start=start):
            if line.strip():
                yield Passage(str(number), line.strip(), number)

    def _parquet(self, start: int) -> Iterator[Passage]:
        """Rows of every file in order; a passage's `line` is its row across all files, 1-based."""
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise MissingDependencyError("pyarrow", "embed") from exc
        before = 0  # rows in the files already read
        for path in self.files:
            handle = pq.ParquetFile(path)
            rows = handle.metadata.num_rows
            if before + rows < start:
                before += rows
                continue
            names = handle.schema_arrow.names
            id_name = next((name for name in self.id_names if name in names), self.id_field)
            wanted = [id_name, self.text_field]
            missing = [name for name in wanted if name not in names]
            if missing:
                raise DataError(path, 0, f"no column {missing[0]!r}; the columns are {names}")
            if self.title_field and self.title_field in names:
                wanted.append(self.title_field)
            row = 0
            for batch in handle.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=wanted):
                if before + row + batch.num_rows < start:
                    row += batch.num_rows
                    continue
                for record in batch.to_pylist():
                    row += 1
                    if before + row >= start:
                        passage = self._passage(record, path, row)
                        yield passage._replace(line=before + row)
            before += rows


def open_source(
    path: str | Path,
    *,
    format: str | None = None,
    id_field: str | None = None,
    text_field: str | None = None,
    title_field: str | None = None,
) -> CorpusSource:
    """The source for `path`: a BEIR directory (its corpus.jsonl), a Parquet directory, or one file
    whose suffix says its format (`format` overrides the suffix)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, 0, "no such file or directory")
    if path.is_dir():
        if (path / "corpus.jsonl").is_file() and format in (None, "beir", "jsonl"):
            path, format = path / "corpus.jsonl", "beir"
        elif format in (None, "parquet"):
            format = "parquet"
    if format is None:
        format = _SUFFIXES.get(path.suffix.lower())
        if format is None:
            raise DataError(path, 0, f"unknown file type {path.suffix!r}; expected one of {sorted(_SUFFIXES)}")
    if format not in FORMATS:
        raise DataError(path, 0, f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    source = CorpusSource(
        path,
        format,
        id_field=id_field or "_id",
        text_field=text_field or "text",
        title_field="title" if title_field is None else title_field,
    )
    if not source.files:
        raise DataError(path, 0, "is a directory with no corpus.jsonl and no .parquet files")
    return source
