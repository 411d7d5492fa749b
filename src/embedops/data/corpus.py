"""Passages to mine negatives from: a BEIR `corpus.jsonl` or a text file with one passage per line."""

from __future__ import annotations

import json
from pathlib import Path

from embedops.data.readers import decoded_lines
from embedops.errors import DataError


def _beir_text(path: Path, number: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(path, number, f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise DataError(path, number, 'expected a JSON object with a "text" string (BEIR corpus layout)')
    title = record.get("title")
    text = record["text"].strip()
    return f"{title.strip()} {text}".strip() if isinstance(title, str) and title.strip() else text


def read_corpus(path: str | Path) -> list[str]:
    """The non-empty passages of `path`, in file order; `.jsonl` is read as BEIR (title + text)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, 0, "no such file")
    is_jsonl = path.suffix.lower() in (".jsonl", ".json")
    passages = []
    for number, line in decoded_lines(path):
        if not line.strip():
            continue
        text = _beir_text(path, number, line) if is_jsonl else line.strip()
        if text:
            passages.append(text)
    if not passages:
        raise DataError(path, 1, "corpus has no passages")
    return passages
