"""The pipeline's held-out split on disk: a text on either side of two rows keeps them on one side, and a
second split replaces the first whole (held-out directory included, removed when nothing is held out)."""

from __future__ import annotations

import json
from pathlib import Path

from embedops.files import temp_files
from embedops.pipeline.split import HELDOUT_DIR, TRAIN_FILE, split_pairs


def test_a_text_shared_across_sides_keeps_its_rows_together(tmp_path: Path) -> None:
    rows = [f"question {i}\tanswer {i}" for i in range(30)]
    rows += [f"Answer  {i}\tfollow-up {i}" for i in range(30)]  # row i's positive is row 30+i's anchor
    data = tmp_path / "pairs.tsv"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    summary = split_pairs(data, tmp_path / "split", eval_fraction=0.3, seed=0)
    train = {json.loads(line)["anchor"] for line in (tmp_path / "split" / TRAIN_FILE).read_text().splitlines()}
    assert summary.groups == 30 and summary.eval_pairs == 18
    for i in range(30):
        assert (f"question {i}" in train) == (f"Answer  {i}" in train), f"pair {i} split across sides"


def test_a_second_split_replaces_the_first_whole(tmp_path: Path) -> None:
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"question {i}\tanswer {i}\n" for i in range(40)), encoding="utf-8")
    directory = tmp_path / "split"
    split_pairs(data, directory, eval_fraction=0.2, validation_fraction=0.1, seed=1)
    assert (directory / HELDOUT_DIR / "qrels" / "dev.tsv").is_file()
    split_pairs(data, directory, eval_fraction=0.2, seed=1)
    assert sorted(path.name for path in (directory / HELDOUT_DIR / "qrels").iterdir()) == ["test.tsv"]
    assert len((directory / TRAIN_FILE).read_text().splitlines()) == 32
    split_pairs(data, directory, eval_fraction=0.0, seed=1)
    assert sorted(path.name for path in directory.iterdir()) == [TRAIN_FILE]
    assert len((directory / TRAIN_FILE).read_text().splitlines()) == 40 and not temp_files(directory)
