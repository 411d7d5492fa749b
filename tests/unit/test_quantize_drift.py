"""The drift sample and its metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedops.errors import DataError
from embedops.quantize.drift import DriftReport, built_in_texts, measure_drift, sample_texts


def test_built_in_set_is_a_few_hundred_distinct_texts() -> None:
    texts = built_in_texts()
    assert len(texts) >= 300
    assert len(set(texts)) == len(texts)
    assert not any(text.startswith("#") for text in texts)


def test_check_data_uses_every_distinct_text_of_the_pairs(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a question\tan answer\nanother question\tan answer\n", encoding="utf-8")
    texts, source = sample_texts(pairs, limit=100)
    assert sorted(texts) == ["a question", "an answer", "another question"]
    assert source == str(pairs)


def test_large_check_data_is_sampled_the_same_way_each_time(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"q{i}\ta{i}\n" for i in range(100)), encoding="utf-8")
    first, _ = sample_texts(pairs, limit=20)
    assert len(first) == 20
    assert sample_texts(pairs, limit=20)[0] == first


def test_bad_check_data_is_reported_with_its_line(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("ok\tfine\nonly one column\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs.tsv:2:"):
        sample_texts(pairs, limit=10)


def test_a_model_has_no_drift_from_itself(tiny_model_dir: Path) -> None:
    from embedops.models import load

    model = load(tiny_model_dir)
    texts = built_in_texts()[:40]
    report = measure_drift(model, model, texts, "built-in")
    assert report.mean_cosine == pytest.approx(1.0, abs=1e-6)
    assert report.top10_overlap == pytest.approx(1.0)
    assert report.samples == 40


def test_verdict_says_whether_the_gate_held() -> None:
    report = DriftReport(
        samples=10, source="built-in", mean_cosine=0.97, p5_cosine=0.9, min_cosine=0.8, top10_overlap=0.7
    )
    assert report.drift == pytest.approx(0.03)
    assert report.verdict(0.02).startswith("FAILED")
    assert report.verdict(0.05).startswith("passed")
    assert report.verdict(None).startswith("measured")
