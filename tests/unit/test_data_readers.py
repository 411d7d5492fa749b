"""Every accepted format and every invalid-input case of the pairs/triplets readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedops.data import PairReader, read_examples
from embedops.errors import DataError


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(*records: object) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("p.tsv", "q1\tp1\nq2\tp2\n", [("q1", "p1", None), ("q2", "p2", None)]),
        ("p.txt", "q1\tp1\n", [("q1", "p1", None)]),
        ("t.tsv", "q1\tp1\tn1\n", [("q1", "p1", "n1")]),
        ("h.tsv", "anchor\tpositive\nq1\tp1\n", [("q1", "p1", None)]),
        ("p.csv", 'q1,p1\n"q, 2","p ""2"""\n', [("q1", "p1", None), ("q, 2", 'p "2"', None)]),
        ("h.csv", "text_a,text_b\nq1,p1\n", [("q1", "p1", None)]),
        ("t.csv", "anchor,positive,negative\nq1,p1,n1\n", [("q1", "p1", "n1")]),
        ("ab.jsonl", jsonl({"text_a": "q1", "text_b": "p1"}), [("q1", "p1", None)]),
        ("short.jsonl", jsonl({"a": "q1", "b": "p1"}), [("q1", "p1", None)]),
        ("apn.jsonl", jsonl({"anchor": "q1", "positive": "p1", "negative": "n1"}), [("q1", "p1", "n1")]),
        ("ap.jsonl", jsonl({"anchor": "q1", "positive": "p1"}), [("q1", "p1", None)]),
        ("qp.jsonl", jsonl({"query": "q1", "positive": "p1", "negative": "n1"}), [("q1", "p1", "n1")]),
        ("bom.tsv", "\ufeffq1\tp1\r\n\n", [("q1", "p1", None)]),
    ],
)
def test_accepted_formats(tmp_path: Path, name: str, content: str, expected: list) -> None:
    rows = read_examples(write(tmp_path, name, content))
    assert [(r.anchor, r.positive, r.negative) for r in rows] == expected


def test_line_numbers_count_skipped_header_and_blank_lines(tmp_path: Path) -> None:
    rows = read_examples(write(tmp_path, "p.tsv", "anchor\tpositive\n\nq1\tp1\n"))
    assert rows[0].line == 3


@pytest.mark.parametrize(
    ("name", "content", "line", "message"),
    [
        ("cols.tsv", "q1\tp1\nq2\n", 2, "found 1 column(s); expected 2 columns"),
        ("many.tsv", "q1\tp1\ta\tb\n", 1, "found 4 column(s)"),
        ("empty-text.tsv", "q1\tp1\n \tp2\n", 2, "empty anchor text (column 1)"),
        ("empty-pos.csv", "q1,\n", 1, "empty positive text (column 2)"),
        ("bad.jsonl", '{"a": "q", "b": "p"}\n{"a": "q2", \n', 2, "invalid JSON"),
        ("keys.jsonl", jsonl({"a": "q"}), 1, "missing keys: found ['a']"),
        ("type.jsonl", jsonl({"a": "q", "b": 3}), 1, "key 'b' must be a string"),
        ("list.jsonl", "[1, 2]\n", 1, "expected a JSON object per line"),
        ("empty.tsv", "", 1, "file is empty"),
        ("blank.jsonl", "\n\n", 1, "file is empty"),
        ("mixed.tsv", "q1\tp1\nq2\tp2\tn2\n", 2, "either pairs or triplets"),
        ("data.parquet", "x", 0, "unknown file type '.parquet'"),
    ],
)
def test_invalid_input_is_located(tmp_path: Path, name: str, content: str, line: int, message: str) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(DataError) as caught:
        read_examples(path)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{path}:{line}: " if line else f"{path}: ")  # no line 0 to point at
    assert message in str(caught.value)


def test_non_utf8_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, "latin.tsv", b"q1\tp1\n" + "caf\xe9\tp2\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.tsv:2: not valid UTF-8"):
        read_examples(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        PairReader(tmp_path / "nope.tsv")
    assert str(caught.value) == f"{tmp_path / 'nope.tsv'}: no such file"


def test_skip_invalid_counts_and_keeps_good_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "p.tsv", "q1\tp1\nbroken\nq2\t\nq3\tp3\n")
    reader = PairReader(path, skip_invalid=True)
    assert [r.anchor for r in reader] == ["q1", "q3"]
    assert reader.stats.rows == 2
    assert reader.stats.skipped == 2
    assert reader.stats.skipped_reasons[0].startswith(f"{path}:2:")


def test_skip_invalid_with_nothing_valid_still_fails(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="all 2 lines are invalid"):
        read_examples(write(tmp_path, "p.tsv", "a\nb\n"), skip_invalid=True)


def test_reader_streams_without_materialising(tmp_path: Path) -> None:
    path = write(tmp_path, "big.tsv", "".join(f"q{i}\tp{i}\n" for i in range(50_000)))
    iterator = iter(PairReader(path))
    first = next(iterator)
    assert first.anchor == "q0"
    assert sum(1 for _ in iterator) == 49_999


def test_data_package_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, embedops.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
