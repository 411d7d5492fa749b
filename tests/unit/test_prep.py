"""`embedops prep` on planted problems: every empty, self, exact and near duplicate caught and reported,
related pairs kept on one side of the split, length skew warned about, and nothing written on failure."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from embedops.cli import main
from embedops.data import read_examples
from embedops.data.dedup import related_groups
from embedops.data.prep import PrepConfig, prep
from embedops.errors import ConfigError, DataError, OutputExistsError

TOPICS = ["storage", "backup", "network", "login", "upload", "search", "billing", "printer", "camera", "sync"]


def clean_pairs(count: int) -> list[tuple[str, str]]:
    """Distinct pairs of random words that no filter should touch."""
    rng = random.Random(count)
    vocabulary = [f"{topic}{suffix}" for topic in TOPICS for suffix in ("", "s", "ing", "ed", "er", "ly", "al")]
    return [
        (
            f"why {' '.join(rng.choices(vocabulary, k=6))} {i}",
            f"answer {' '.join(rng.choices(vocabulary, k=12))} {i}",
        )
        for i in range(count)
    ]


def write_tsv(path: Path, rows: list[tuple[str, ...]]) -> Path:
    path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    return path


def removed_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def planted(tmp_path: Path) -> tuple[Path, dict[int, tuple[str, int | None]]]:
    """A file with known problems; returns it and {line: (reason, duplicate_of_line)}."""
    rows = clean_pairs(40)
    expected: dict[int, tuple[str, int | None]] = {}

    def plant(row: tuple[str, str], reason: str, of: int | None = None) -> None:
        rows.append(row)
        expected[len(rows)] = (reason, of)

    plant(rows[0], "exact-duplicate", 1)
    plant((f"  {rows[1][0]}  ", rows[1][1].replace(" ", " \u00a0 ", 1)), "exact-duplicate", 2)  # whitespace only
    plant((rows[2][0].upper(), rows[2][1] + " !"), "near-duplicate", 3)  # case and punctuation
    plant((rows[3][0], rows[3][1] + " ok"), "near-duplicate", 4)  # a small edit of a long text
    plant(("same text here", "same text here"), "self-pair")
    plant(("caf\u00e9 menu", "cafe\u0301 menu"), "self-pair")  # equal after NFC
    plant(("\u200b\u200b", "an answer nobody asked for"), "empty")  # invisible characters only
    plant(("a question", "\ufeff\u00ad"), "empty")
    plant(("a question with a blank answer", ""), "empty")  # a literally empty cell
    return write_tsv(tmp_path / "pairs.tsv", rows), expected


def test_every_planted_problem_is_caught_and_reported(planted, tmp_path: Path) -> None:
    data, expected = planted
    out = tmp_path / "out" / "clean.tsv"
    removed = tmp_path / "out" / "removed.jsonl"
    result = prep(PrepConfig(data=data, output=out, removed=removed, eval_fraction=0.25))

    records = removed_records(removed)
    found = {record["line"]: (record["reason"], record.get("duplicate_of_line")) for record in records}
    assert found == expected
    assert result.removed == {
        "empty": 3,
        "self-pair": 2,
        "too-short": 0,
        "too-long": 0,
        "exact-duplicate": 2,
        "near-duplicate": 2,
    }
    kept = read_examples(out) + read_examples(tmp_path / "out" / "clean.eval.tsv")
    assert len(kept) == result.train + result.eval == 40
    assert result.eval == pytest.approx(10, abs=2)
    assert {example.anchor for example in kept} == {anchor for anchor, _ in clean_pairs(40)}
    report = json.loads((tmp_path / "out" / "clean.prep.json").read_text())
    assert report["removed"] == result.removed and report["rows"] == 49
    assert (tmp_path / "out" / "clean.lengths.png").read_bytes().startswith(b"\x89PNG")


def test_related_pairs_never_straddle_the_split(tmp_path: Path) -> None:
    """Near-identical questions with different answers (and shared answers) are kept, but on one side."""
    rows = clean_pairs(60)
    families = []
    names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo"]
    for name in names:
        question = f"how can I export my {name} report to a spreadsheet file"
        family = [
            (question, f"open the {name} report and choose export, then spreadsheet"),
            (question.replace("how can I", "How can i") + "?", f"{name} reports can be downloaded from the menu"),
            (f"is there a csv download for {name}", f"{name} reports can be downloaded from the menu"),
        ]
        families.append(family)
        rows.extend(family)
    random.Random(0).shuffle(rows)
    data = write_tsv(tmp_path / "pairs.tsv", rows)
    out = tmp_path / "clean.tsv"
    result = prep(PrepConfig(data=data, output=out, eval_fraction=0.3))

    assert sum(result.removed.values()) == 0
    train = {(e.anchor, e.positive) for e in read_examples(out)}
    evaluation = {(e.anchor, e.positive) for e in read_examples(tmp_path / "clean.eval.tsv")}
    assert train and evaluation and not train & evaluation
    for family in families:
        sides = {pair in evaluation for pair in family}
        assert len(sides) == 1, f"family split across train/eval: {family}"


def test_split_is_deterministic_and_independent_of_line_order(tmp_path: Path) -> None:
    rows = clean_pairs(200)
    first = prep(PrepConfig(data=write_tsv(tmp_path / "a.tsv", rows), output=tmp_path / "a-out.tsv"))
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    prep(PrepConfig(data=write_tsv(tmp_path / "b.tsv", shuffled), output=tmp_path / "b-out.tsv"))
    eval_a = {tuple(e[:2]) for e in read_examples(tmp_path / "a-out.eval.tsv")}
    eval_b = {tuple(e[:2]) for e in read_examples(tmp_path / "b-out.eval.tsv")}
    assert eval_a == eval_b and first.eval == 20


def test_groups_join_shared_sides_and_across_sides_only_when_asked() -> None:
    """Rows 0 and 3 share a positive; row 1's positive is row 0's anchor, which joins them only across sides."""
    anchors, positives = np.array([1, 2, 3, 4], dtype=np.uint64), np.array([5, 1, 6, 5], dtype=np.uint64)
    none = np.empty(0, dtype=np.int64)

    def grouped(labels: np.ndarray) -> list[list[int]]:
        return sorted(np.flatnonzero(labels == label).tolist() for label in np.unique(labels))

    assert grouped(related_groups(4, none, none, anchors, positives)) == [[0, 3], [1], [2]]
    assert grouped(related_groups(4, none, none, anchors, positives, across_sides=True)) == [[0, 1, 3], [2]]
    joined = related_groups(4, np.array([1]), np.array([2]), anchors, positives)  # a related (near-duplicate) pair
    assert grouped(joined) == [[0, 3], [1, 2]]


def test_length_skew_is_warned_and_bounds_applied(tmp_path: Path) -> None:
    long_answer = "the long answer explains every single step of the procedure in great detail " * 6
    rows = [(anchor, f"{long_answer} case {i}") for i, (anchor, _) in enumerate(clean_pairs(30))]
    rows.append(("tiny", "x" * 10))
    rows.append(("q" * 5, "an answer that is way too long " * 40))
    data = write_tsv(tmp_path / "skewed.tsv", rows)
    result = prep(PrepConfig(data=data, output=tmp_path / "out.tsv", min_chars=5, max_chars=1000, eval_fraction=0))
    assert result.removed["too-short"] == 1 and result.removed["too-long"] == 1
    assert result.train == 30 and not (tmp_path / "out.eval.tsv").exists()
    lengths = result.lengths
    assert lengths["unit"] == "tokens" and lengths["ratio"]["median"] > 3
    assert any("length bias: the positive is typically" in w for w in lengths["warnings"])
    balanced = prep(PrepConfig(data=write_tsv(tmp_path / "b.tsv", clean_pairs(20)), output=tmp_path / "b-out.tsv"))
    assert balanced.lengths["warnings"] == []


def test_jsonl_triplets_keep_their_negative(tmp_path: Path) -> None:
    data = tmp_path / "triplets.jsonl"
    lines = [
        {"anchor": f"question {i}  about {TOPICS[i % 10]}", "positive": f"answer {i}", "negative": f"other {i}"}
        for i in range(10)
    ]
    lines.append({"anchor": "question x", "positive": "answer x", "negative": "answer x"})
    data.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    result = prep(PrepConfig(data=data, output=tmp_path / "clean.jsonl", eval_fraction=0))
    assert result.removed["self-pair"] == 1
    examples = read_examples(tmp_path / "clean.jsonl")
    assert examples[0].anchor == "question 0 about storage" and examples[0].negative == "other 0"


def test_bad_input_is_a_located_error_and_leaves_nothing(tmp_path: Path) -> None:
    rows = [*clean_pairs(5), ("only one column",)]
    data = write_tsv(tmp_path / "bad.tsv", rows)
    out = tmp_path / "out" / "clean.tsv"
    with pytest.raises(DataError, match=r"bad\.tsv:6: found 1 column"):
        prep(PrepConfig(data=data, output=out, removed=tmp_path / "out" / "removed.jsonl"))
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_existing_output_is_refused_unless_forced(tmp_path: Path) -> None:
    data = write_tsv(tmp_path / "pairs.tsv", clean_pairs(10))
    out = tmp_path / "clean.tsv"
    out.write_text("keep me\n")
    with pytest.raises(OutputExistsError):
        prep(PrepConfig(data=data, output=out))
    assert out.read_text() == "keep me\n"
    prep(PrepConfig(data=data, output=out, force=True))
    assert len(read_examples(out)) == 9


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"eval_fraction": 1.0}, "--eval-fraction"),
        ({"near_dup_method": "simhash"}, "--near-dup-method"),
        ({"min_chars": 10, "max_chars": 5}, "--max-chars"),
        ({"near_dup_threshold": 0}, "--near-dup-threshold"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PrepConfig(data=tmp_path / "in.tsv", output=tmp_path / "out.tsv", **overrides)


def test_cli_summary_and_exit_codes(planted, tmp_path: Path, capsys) -> None:
    data, _ = planted
    out = tmp_path / "cli" / "clean.tsv"
    assert main(["prep", "--data", str(data), "--output", str(out), "--removed", str(tmp_path / "r.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert "read 49 pairs" in printed and "near-duplicate   2" in printed and "exact-duplicate  2" in printed
    assert main(["prep", "--data", str(data), "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    bad = write_tsv(tmp_path / "bad.tsv", [("a", "b", "c", "d")])
    assert main(["prep", "--data", str(bad), "--output", str(tmp_path / "x.tsv")]) == 2
    assert "bad.tsv:1: found 4 column(s)" in capsys.readouterr().err
    assert not (tmp_path / "x.tsv").exists()


def test_embedding_method_catches_what_both_methods_see(planted, tmp_path: Path, tiny_model_dir: Path) -> None:
    data, expected = planted
    result = prep(
        PrepConfig(
            data=data,
            output=tmp_path / "e.tsv",
            near_dup_method="embedding",
            near_dup_threshold=0.99,
            model=str(tiny_model_dir),
            removed=tmp_path / "r.jsonl",
        )
    )
    found = {r["line"]: r["reason"] for r in removed_records(tmp_path / "r.jsonl")}
    assert result.removed["near-duplicate"] >= 1
    for line, (reason, _) in expected.items():
        if reason != "near-duplicate":
            assert found[line] == reason
