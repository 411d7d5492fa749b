"""Data files that are hostile or odd: 2 GB without a newline (refused at line 1 in bounded memory),
multi-line quoted CSV fields, a directory, and the evaluation readers under the same cap and line numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from embedops.data import PairReader
from embedops.errors import DataError


def test_a_2gb_file_without_newlines_fails_at_line_1_in_bounded_memory(tmp_path: Path) -> None:
    huge = tmp_path / "huge.tsv"
    with open(huge, "wb") as handle:
        handle.truncate(2 << 30)  # sparse: 2 GiB of NUL bytes, no newline, almost no disk
    code = (
        "import resource, sys\n"
        "from embedops.data import PairReader\n"
        "from embedops.errors import DataError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    list(PairReader(sys.argv[1]))\n"
        "except DataError as exc:\n    print(exc)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(huge)], capture_output=True, text=True, timeout=120)
    message, peak_mib = result.stdout.strip().splitlines()
    assert message.startswith(f"{huge}:1: line is longer than 8 MiB")
    assert int(peak_mib) < 64, f"reading the file took {peak_mib} MiB more than the import"


def test_a_quoted_csv_field_keeps_its_newline_and_its_line(tmp_path: Path) -> None:
    data = tmp_path / "pairs.csv"
    data.write_text('anchor,positive\nfirst,"two\nlines"\nsecond,one line\nthird,"unclosed\n')
    reader = PairReader(data)
    rows = []
    with pytest.raises(DataError) as refused:
        rows.extend(reader)
    assert [(row.anchor, row.positive, row.line) for row in rows] == [
        ("first", "two\nlines", 2),
        ("second", "one line", 4),
    ]
    assert refused.value.line == 5


def test_a_directory_as_data_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        PairReader(tmp_path)


def test_evaluation_readers_share_the_cap_and_the_line_numbers(tmp_path: Path) -> None:
    from embedops.evaluate.datasets import load_beir, load_sts

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    with open(beir / "corpus.jsonl", "wb") as handle:
        handle.truncate(9 << 20)  # one 9 MiB line
    with pytest.raises(DataError, match=r"corpus\.jsonl:1: line is longer than 8 MiB"):
        load_beir(beir, "test")

    (beir / "corpus.jsonl").write_text('{"_id": "d1", "text": "a document"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    (beir / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\t\xff\t1\n")
    with pytest.raises(DataError, match=r"test\.tsv:3: not valid UTF-8"):
        load_beir(beir, "test")

    sts = tmp_path / "sts.tsv"
    sts.write_bytes(b"genre\tfile\tyear\tid\t4.0\ta\tb\n" + b"genre\tfile\tyear\tid\t1.0\t\xfe\tb\n")
    with pytest.raises(DataError, match=r"sts\.tsv:2: not valid UTF-8"):
        load_sts(sts, "test")
