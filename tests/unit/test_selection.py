"""Keeping the best epoch (train.selection) on the tiny model: a run that learns keeps a trained epoch,
a run that is wrecked by an absurd learning rate stops early and publishes the weights from before
training, and the curve lands in the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedops.artifact import read_manifest
from embedops.evaluate.datasets import load_triples
from embedops.models import load
from embedops.train.config import FinetuneConfig
from embedops.train.finetune import finetune
from embedops.train.selection import EpochSelection

TOPICS = ["storage", "backup", "network", "login", "upload", "search", "billing", "printer"]
TEXTS = ["how do I fix storage problem number 3", "to repair login issue 5, restart the service"]


def pairs_file(path: Path, numbers: range) -> Path:
    lines = [
        f"how do I fix {TOPICS[i % 8]} problem number {i}\tto repair {TOPICS[i % 8]} issue {i}, restart the service"
        for i in numbers
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def selection(path: Path, patience: int) -> EpochSelection:
    return EpochSelection(load_triples(path), "mrr@10", "validation pairs", patience, batch_size=16)


def encode(model_dir: Path) -> np.ndarray:
    return load(model_dir, device="cpu").encode(TEXTS, convert_to_numpy=True)


def test_wrecked_training_stops_early_and_keeps_the_weights_from_before(tmp_path: Path, tiny_model_dir: Path) -> None:
    train, validation = pairs_file(tmp_path / "train.tsv", range(48)), pairs_file(tmp_path / "v.tsv", range(100, 116))
    chosen = selection(validation, patience=1)
    config = FinetuneConfig(
        data=train, output=tmp_path / "ft", base_model=str(tiny_model_dir), epochs=4, batch_size=8, lr=5.0, device="cpu"
    )
    finetune(config, chosen)

    record = read_manifest(tmp_path / "ft").training["selection"]
    scores = [point["mrr@10"] for point in record["curve"]]
    assert record["best_epoch"] == 0 and record["stopped_early"] is True
    assert [point["epoch"] for point in record["curve"]] == [0, 1] and scores[1] < scores[0]
    np.testing.assert_allclose(encode(tmp_path / "ft"), encode(tiny_model_dir), atol=1e-6)


@pytest.mark.slow
def test_learning_run_keeps_its_best_trained_epoch(tmp_path: Path, tiny_model_dir: Path) -> None:
    train, validation = pairs_file(tmp_path / "train.tsv", range(64)), pairs_file(tmp_path / "v.tsv", range(100, 116))
    chosen = selection(validation, patience=0)
    config = FinetuneConfig(
        data=train,
        output=tmp_path / "ft",
        base_model=str(tiny_model_dir),
        epochs=3,
        batch_size=8,
        lr=1e-3,
        device="cpu",
    )
    finetune(config, chosen)

    record = read_manifest(tmp_path / "ft").training["selection"]
    curve = {point["epoch"]: point["mrr@10"] for point in record["curve"]}
    assert list(curve) == [0, 1, 2, 3] and record["stopped_early"] is False  # patience 0: every epoch runs
    assert record["best_epoch"] >= 1 and curve[record["best_epoch"]] == max(curve.values()) > curve[0]
    assert not np.allclose(encode(tmp_path / "ft"), encode(tiny_model_dir), atol=1e-3)
