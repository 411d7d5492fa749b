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
        readers = {
            "beir": self._jsonl,
            "jsonl": self._jsonl,
            "tsv": self._tsv,
            "csv": self._csv,
            "text": self._text,
            "parquet": self._parquet,
        }
        return readers[self.format]()

    def _jsonl(self) -> Iterator[Passage]:
        for number, line in decoded_lines(self.path):
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

    def _cells(self, rows: Iterator[tuple[int, list[str] | DataError]]) -> Iterator[Passage]:
        columns: tuple[int, int] = (0, 1)
        first = True
        for number, cells in rows:
            if isinstance(cells, DataError):
                raise cells
            if not cells or not any(cell.strip() for cell in cells):
                continue
            if first:
                first = False
                header = [cell.strip() for cell in cells]
                id_name = next((name for name in self.id_names if name in header), None)
                if id_name is not None and self.text_field in header:
                    columns = (header.index(id_name), header.index(self.text_field))
                    continue
            if len(cells) <= max(columns):
                raise DataError(self.path, number, f"found {len(cells)} column(s); expected id and text")
            ident, text = cells[columns[0]].strip(), cells[columns[1]].strip()
            if not ident:
                raise DataError(self.path, number, "empty id")
            yield Passage(ident, text, number)

    def _tsv(self) -> Iterator[Passage]:
        return self._cells((number, line.split("\t")) for number, line in decoded_lines(self.path))

    def _csv(self) -> Iterator[Passage]:
        return self._cells(csv_records(self.path))

    def _text(self) -> Iterator[Passage]:
        for number, line in decoded_lines(self.path):
            if line.strip():
                yield Passage(str(number), line.strip(), number)

    def _parquet(self) -> Iterator[Passage]:
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise MissingDependencyError("pyarrow", "embed") from exc
        for path in self.files:
            handle = pq.ParquetFile(path)
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
                for record in batch.to_pylist():
                    row += 1
                    yield self._passage(record, path, row)


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
