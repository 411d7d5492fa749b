"""The bundled all-MiniLM-L6-v2 quantized to int8 through the seed script: small, close to its source,
and loadable by embedops.models.load (what the evaluator and the server use)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedops.artifact import read_manifest
from embedops.models import DEFAULT_MODEL, load, resolve

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_seed_script_quantizes_the_default_model_to_int8(tmp_path: Path) -> None:
    output = tmp_path / "minilm-int8"
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fine_tuning/training/scripts/quantize_embedding_model.py"),
            "--model-path",
            DEFAULT_MODEL,
            "--output",
            str(output),
            "--dtype",
            "int8",
            "--max-drift",
            "0.02",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    assert "drift check passed" in completed.stdout
    manifest = read_manifest(output)
    fp32_bytes = (resolve(DEFAULT_MODEL).path / "model.safetensors").stat().st_size
    assert (output / manifest.file).stat().st_size <= 0.30 * fp32_bytes
    drift = manifest.quantization["drift"]
    assert drift["samples"] >= 300 and drift["mean_cosine"] >= 0.98 and drift["top10_overlap"] >= 0.8
    model = load(output)
    first, second, unrelated = model.encode(
        ["How do I reset my password?", "I forgot my password, how can I change it?", "The cat sat on the mat."],
        normalize_embeddings=True,
    )
    assert first @ second > first @ unrelated + 0.3


@pytest.mark.integration
@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_seed_make_target_quantizes_a_finetuned_artifact(tmp_path: Path, tiny_model_dir: Path, dtype: str) -> None:
    """`make embed-quantize MODEL=… OUTPUT=… DTYPE=…` exactly as the seed prints it, on a fine-tuned artifact."""
    import shutil

    from embedops.cli import main

    if shutil.which("make") is None or Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("runs the Makefile against this checkout's .venv; run the suite through `make test`")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"question {i} about topic {i % 5}\tanswer {i} for topic {i % 5}\n" for i in range(16)))
    finetuned = tmp_path / "models" / "x"
    assert (
        main(
            [
                "finetune",
                "--data",
                str(pairs),
                "--base-model",
                str(tiny_model_dir),
                "--output",
                str(finetuned),
                "--batch-size",
                "8",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    output = tmp_path / "models" / f"x-{dtype}"
    result = subprocess.run(
        ["make", "-C", str(ROOT), "embed-quantize", f"MODEL={finetuned}", f"OUTPUT={output}", f"DTYPE={dtype}"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    manifest = read_manifest(output)
    assert manifest.kind == "quantized" and manifest.dtype == dtype and manifest.parent == str(finetuned)
    assert load(output).encode(["a question about topic 1"]).shape == (1, 32)
