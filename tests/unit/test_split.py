"""The pipeline's held-out split on disk: a second split replaces the first whole (held-out directory
included, removed when nothing is held out)."""

from __future__ import annotations

from pathlib import Path

from embedops.files import temp_files
from embedops.pipeline.split import HELDOUT_DIR, TRAIN_FILE, split_pairs


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
