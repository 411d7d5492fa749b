"""The bundled all-MiniLM-L6-v2 quantized to int8 through the seed script: small, close to its source,
loadable by embedops.models.load (what the evaluator uses), and served by the engine's own ONNX
Runtime path to the same vectors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedops.artifact import read_manifest
from embedops.models import DEFAULT_MODEL, load, resolve
from embedops.serve.engine import Engine

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
    texts = ["How do I reset my password?", "I forgot my password, how can I change it?", "The cat sat on the mat."]
    first, second, unrelated = model.encode(texts, normalize_embeddings=True)
    assert first @ second > first @ unrelated + 0.3
    engine = Engine(resolve(output))
    assert engine.info.forward == "onnxruntime+numpy"
    np.testing.assert_allclose(engine.embed(engine.tokenize(texts, truncate=True)), model.encode(texts), atol=1e-5)
