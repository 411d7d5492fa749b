"""`embedops mine` with a tiny real model: the rank window, the false-negative guard, output that
`embedops finetune` reads, located errors with nothing written, and `finetune --mine-negatives`."""

from __future__ import annotations

import io
import json
import random
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedops.artifact import read_manifest
from embedops.cli import main
from embedops.data import read_examples
from embedops.data.mine import MineConfig, mine, select_negatives
from embedops.errors import ConfigError, DataError

WORDS = ["storage", "backup", "network", "login", "upload", "search", "billing", "printer", "camera", "sync"]


def pairs_file(path: Path, count: int) -> Path:
    rng = random.Random(0)
    lines = [
        f"how to fix {' '.join(rng.choices(WORDS, k=3))} {i}\tfix {' '.join(rng.choices(WORDS, k=5))} {i}"
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def corpus_file(path: Path, count: int) -> Path:
    rng = random.Random(1)
    path.write_text("".join(f"{' '.join(rng.choices(WORDS, k=6))} passage {i}\n" for i in range(count)))
    return path


def config(**overrides) -> MineConfig:
    return MineConfig(**{"data": "in.tsv", "output": "out.jsonl", **overrides})


def test_window_excludes_positives_and_guards_against_false_negatives() -> None:
    indices = np.arange(10)
    scores = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    settings = config(range_min=1, range_max=8, relative_margin=0.1, num_negatives=3)
    chosen, skipped = select_negatives(indices, scores, {0}, 0.85, settings, random.Random(0))
    # without the positive (0) the ranking is 1..9; the window drops rank 0 (index 1) and keeps 2..8;
    # the guard drops scores above 0.85 * 0.9 = 0.765: indices 2 and 3
    assert [index for index, _ in chosen] == [4, 5, 6] and skipped == 2
    random_pick, _ = select_negatives(
        indices,
        scores,
        {0},
        0.85,
        config(range_min=1, range_max=8, relative_margin=0.1, num_negatives=3, sampling="random"),
        random.Random(0),
    )
    assert len(random_pick) == 3 and {i for i, _ in random_pick} <= {4, 5, 6, 7, 8}
    assert [s for _, s in random_pick] == sorted((s for _, s in random_pick), reverse=True)


def test_mined_triplets_feed_finetune(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 30)
    corpus = corpus_file(tmp_path / "corpus.txt", 40)
    out = tmp_path / "triplets.jsonl"
    settings = MineConfig(
        data=data,
        output=out,
        corpus=corpus,
        model=str(tiny_model_dir),
        num_negatives=2,
        range_min=2,
        range_max=30,
        relative_margin=0.0,  # random weights score everything alike; keep negatives below the positive
    )
    result = mine(settings)
    triplets = read_examples(out)
    positives = {line.split("\t")[1].strip() for line in data.read_text().splitlines()}
    short = result.negatives_per_pair.get(0, 0) + result.negatives_per_pair.get(1, 0)
    # Every pair trains: those the rank window left short were filled with random passages.
    assert short > 0 and result.filled == short
    assert len(triplets) == result.triplets == 2 * 30
    assert {t.anchor for t in triplets} == {line.split("\t")[0] for line in data.read_text().splitlines()}
    assert result.pairs == 30 and result.corpus == 70 and sum(result.negatives_per_pair.values()) == 30
    assert all(t.negative not in (t.positive, t.anchor) for t in triplets)
    assert {t.negative for t in triplets} - positives  # negatives come from the corpus too

    dropped = mine(replace(settings, output=tmp_path / "dropped.jsonl", fill="drop"))
    assert dropped.filled == 0 and dropped.negatives_per_pair == result.negatives_per_pair
    expected = 2 * result.negatives_per_pair.get(2, 0) + result.negatives_per_pair.get(1, 0)
    assert len(read_examples(tmp_path / "dropped.jsonl")) == dropped.triplets == expected


def test_beir_corpus_and_located_errors_leave_nothing(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 12)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"_id": f"d{i}", "title": "", "text": f"passage about {w}"}) + "\n" for i, w in enumerate(WORDS)
        )
        + "{broken\n"
    )
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match=r"corpus\.jsonl:11: invalid JSON"):
        mine(MineConfig(data=data, output=out, corpus=corpus, model=str(tiny_model_dir)))
    bad_pairs = tmp_path / "bad.tsv"
    bad_pairs.write_text("a question\tan answer\nno tab here\n")
    with pytest.raises(DataError, match=r"bad\.tsv:2: found 1 column"):
        mine(MineConfig(data=bad_pairs, output=out, model=str(tiny_model_dir)))
    triplets = tmp_path / "t.tsv"
    triplets.write_text("a\tb\tc\n")
    with pytest.raises(DataError, match=r"t\.tsv:1: already holds a negative"):
        mine(MineConfig(data=triplets, output=out, model=str(tiny_model_dir)))
    with pytest.raises(ConfigError, match="no pair got a negative"):
        mine(MineConfig(data=data, output=out, model=str(tiny_model_dir), range_min=50, range_max=60))
    assert list(tmp_path.glob("*out*")) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_negatives": 11}, "--num-negatives"),
        ({"num_negatives": 0}, "--num-negatives"),
        ({"range_min": 50, "range_max": 50}, "--range-max"),
        ({"relative_margin": 1.0}, "--relative-margin"),
        ({"sampling": "bottom"}, "--sampling"),
    ],
)
def test_bad_settings_are_config_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**overrides)


def test_cli_mine_and_finetune_mine_negatives(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 24)
    out = tmp_path / "mined.jsonl"
    args = ["mine", "--data", str(data), "--output", str(out), "--model", str(tiny_model_dir), "--range-min", "0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "pairs got 1 mined negative(s)" in printed and f"wrote {out}" in printed
    assert "pairs short of mined negatives got random passages" in printed
    assert main(args) == 2 and "already exists" in capsys.readouterr().err

    model_out = tmp_path / "ft"
    code = main(
        [
            "finetune",
            "--device",
            "cpu",
            "--data",
            str(data),
            "--base-model",
            str(tiny_model_dir),
            "--output",
            str(model_out),
            "--batch-size",
            "8",
            "--mine-negatives",
            "1",
        ]
    )
    assert code == 0
    training = read_manifest(model_out).training
    assert training["mined_negatives"] == 1 and training["hard_negatives"] is True
    mined = training["mined"]
    assert mined["pairs"] == 24 and mined["with_mined"] + mined["with_random"] == 24 and training["pairs"] == 24
    assert training["data"] == str(data)


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so bars meant for people are drawn into it."""

    def isatty(self) -> bool:
        return True


def test_mining_shows_what_it_encodes(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 24)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    args = ["mine", "--data", str(data), "--output", str(tmp_path / "m.jsonl"), "--model", str(tiny_model_dir)]
    assert main([*args, "--range-min", "0", "--batch-size", "8"]) == 0
    drawn = terminal.getvalue()
    assert "Batches" not in drawn + capsys.readouterr().err
    labels = {match.group(1) for match in re.finditer(r"(?:^|[\r\n])([^\r\n:]+:[^\r\n:]+): +\d+%\|", drawn)}
    assert labels == {"mine: encoding anchors", "mine: encoding passages"}  # the ranking bar has no total
    assert "mine: encoding anchors: 100%|" in drawn and "24/24 [" in drawn


def test_labeled_encoding_gives_the_vectors_of_one_encode_call(tiny_model_dir: Path) -> None:
    from embedops.data.encoding import encode
    from embedops.models import load

    model = load(str(tiny_model_dir), device="cpu")
    rng = random.Random(2)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(150)] + ["sync", "sync", ""]
    whole = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    labeled = encode(model, texts, label="test", batch_size=32, normalize_embeddings=True)
    assert labeled.dtype == whole.dtype and np.array_equal(labeled, whole)
