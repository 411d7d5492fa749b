"""Atomic replacement (`embedops.files`): the new content or the old, never a mix, and no temp file left."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedops.files import atomic_path, is_temp_of, temp_files, temp_path, write_text_atomically


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_text_atomically(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as staging:
        staging.write_text("half of the new", encoding="utf-8")
        raise RuntimeError("killed mid-write")
    assert target.read_text(encoding="utf-8") == "old" and not temp_files(tmp_path)
    write_text_atomically(target, "new")
    assert target.read_text(encoding="utf-8") == "new" and not temp_files(tmp_path)


def test_a_directory_replaces_a_directory_whole(tmp_path: Path) -> None:
    target = tmp_path / "heldout"
    (target / "qrels").mkdir(parents=True)
    (target / "qrels" / "dev.tsv").write_text("stale", encoding="utf-8")
    with atomic_path(target) as staging:
        (staging / "qrels").mkdir(parents=True)
        (staging / "qrels" / "test.tsv").write_text("fresh", encoding="utf-8")
    assert [path.name for path in (target / "qrels").iterdir()] == ["test.tsv"] and not temp_files(tmp_path)


def test_temp_names_are_recognised_as_their_target_s_only(tmp_path: Path) -> None:
    left = temp_path(tmp_path / "embedops.json")
    left.write_text("{}", encoding="utf-8")  # what a kill between write and rename leaves
    assert temp_files(tmp_path) == [left] and is_temp_of(left.name, "embedops.json")
    assert not is_temp_of(left.name, "embed.json") and not is_temp_of("embedops.json", "embedops.json")
