"""`embedops eval` end to end on the tiny real model: comparison table, outputs, gate exit codes,
recording into an artifact, and exit 2 with a clear message for every kind of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedops.artifact import ArtifactBuilder, Manifest, read_manifest
from embedops.cli import main

ROOT = Path(__file__).resolve().parents[2]
TOPICS = ["cooking pasta", "paying taxes", "training a puppy", "repairing a bike", "planting tomatoes"]


@pytest.fixture(scope="module")
def triples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("eval-data") / "triples.tsv"
    lines = [
        f"how do I start {topic} {n}?\ta beginner guide to {topic}, part {n}\tthe weather on day {n} of {topic}"
        for topic in TOPICS
        for n in range(4)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def collapsed_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with every weight zeroed: all texts get the same vector, the worst possible ranker."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    for parameter in model.parameters():
        parameter.data.zero_()
    path = tmp_path_factory.mktemp("collapsed") / "collapsed-model"
    model.save(str(path))
    return path


@pytest.fixture
def tiny_artifact(tiny_model_dir: Path, tmp_path: Path) -> Path:
    with ArtifactBuilder(tmp_path / "tiny-artifact") as builder:
        shutil.copytree(tiny_model_dir, builder.path, dirs_exist_ok=True)
        return builder.publish(Manifest(kind="finetuned", base_model=str(tiny_model_dir), dim=32))


def test_two_models_side_by_side_with_json_and_markdown_report(
    tiny_model_dir: Path, collapsed_model: Path, triples: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out_json, out_md = tmp_path / "eval.json", tmp_path / "eval.md"
    argv = ["eval", "--model", str(tiny_model_dir), "--model", str(collapsed_model), "--data", str(triples)]
    assert main([*argv, "--json", str(out_json), "--report", str(out_md), "--k", "1,3"]) == 0
    table = capsys.readouterr().out
    assert "triples (triples: 20 queries, 40 documents)" in table
    assert table.splitlines()[1].split() == ["metric", str(tiny_model_dir), str(collapsed_model)]
    result = json.loads(out_json.read_text())
    assert result["metrics"] == ["mrr@10", "ndcg@10", "hit@1", "hit@3", "accuracy"]
    baseline, collapsed = result["models"]
    assert baseline["delta_points"]["mrr@10"] == 0
    # All-equal vectors tie everywhere, and ties count against the model.
    assert collapsed["metrics"]["hit@3"] == 0 and collapsed["metrics"]["accuracy"] == 0
    delta = (collapsed["metrics"]["mrr@10"] - baseline["metrics"]["mrr@10"]) * 100
    assert collapsed["delta_points"]["mrr@10"] == pytest.approx(delta)
    assert f"({delta:+.2f})" in table
    report = out_md.read_text()
    assert "| mrr@10 |" in report and "![main metrics](eval.png)" in report
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_exit_codes(
    tiny_model_dir: Path, collapsed_model: Path, triples: Path, capsys: pytest.CaptureFixture
) -> None:
    base = ["eval", "--data", str(triples), "--model", str(tiny_model_dir)]
    assert main([*base, "--model", str(tiny_model_dir), "--max-drop", "mrr@10=0", "--fail-below", "hit@10=0.1"]) == 0
    assert "gate passed" in capsys.readouterr().out
    assert main([*base, "--model", str(collapsed_model), "--max-drop", "mrr@10=1"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: gate failed: {collapsed_model} mrr@10 dropped ")
    assert main([*base, "--fail-below", "ndcg@5=0.999"]) == 1
    assert "ndcg@5" in capsys.readouterr().err


def test_record_writes_the_eval_block_of_an_artifact(tiny_artifact: Path, triples: Path) -> None:
    assert main(["eval", "--model", str(tiny_artifact), "--data", str(triples), "--max-queries", "5", "--record"]) == 0
    manifest = read_manifest(tiny_artifact)
    assert manifest is not None
    recorded = manifest.eval["triples-q5"]
    assert recorded["queries"] == 5 and 0 <= recorded["mrr@10"] <= 1
    # The manifest is not hashed: the artifact still verifies and loads.
    assert main(["info", str(tiny_artifact)]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "missing.tsv"], "missing.tsv: no such file"),
        (["--model", "./no-such-model"], "does not exist"),
        (["--fail-below", "spearman=0.5"], "'spearman' is not available for a triples evaluation"),
        (["--fail-below", "mrr@10"], "expected METRIC=NUMBER"),
        (["--max-drop", "mrr@10=1"], "at least two --model"),
        (["--task", "sts"], "STS-B layout"),
        (["--batch-size", "0"], "--batch-size"),
        (["--report", "report.html"], "expected a .md file"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    tiny_model_dir: Path, triples: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    argv = ["eval", "--model", str(tiny_model_dir), "--data", str(triples)]
    if "--data" in extra or "--model" in extra:
        flag = "--data" if "--data" in extra else "--model"
        argv[argv.index(flag) + 1] = extra[1]
        extra = []
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err


def test_seed_script_forwards_to_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "eval_embedding_model.py"), "--help"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "--fail-below" in done.stdout


def test_an_onnx_artifact_is_scored_on_the_vectors_it_serves(onnx_artifact: Path, triples: Path) -> None:
    """On the CPU an ONNX artifact is encoded by the server's engine in lanes: the same vectors as
    sentence-transformers' encode of the same graph, so the same scores."""
    from embedops.evaluate.datasets import load_task
    from embedops.evaluate.encoders import ModelEncoder, embed
    from embedops.evaluate.scoring import score
    from embedops.models import load
    from embedops.serve.engine import Engine
    from embedops.serve.lanes import batch_job_lanes

    texts = [line.split("\t")[1] for line in triples.read_text().splitlines()]
    encoder = ModelEncoder(str(onnx_artifact))
    engine = encoder.load()
    assert isinstance(engine, Engine) and engine.model is None and engine.lanes == batch_job_lanes()
    model = load(encoder.ref, device="cpu")
    expected = model.encode(texts, batch_size=4, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(embed(encoder, texts, batch_size=4, label="test"), expected, atol=1e-5)
    task = load_task(triples)

    class SentenceTransformerEncoder:
        name = "st"

        def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
            return model.encode(texts, batch_size=batch_size, convert_to_numpy=True)

    metrics = ["ndcg@10", "mrr@10"]
    assert score(task, encoder, metrics=metrics, batch_size=4) == pytest.approx(
        score(task, SentenceTransformerEncoder(), metrics=metrics, batch_size=4), abs=1e-9
    )
