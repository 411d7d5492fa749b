"""The bundled all-MiniLM-L6-v2 quantized to int8 through the seed script: small, close to its source,
loadable by embedops.models.load (what the evaluator uses), served by the engine's own ONNX Runtime
path to the same vectors, and giving a text the same vector alone and in any batch, in process and
through a real server."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from embedops.artifact import read_manifest
from embedops.models import DEFAULT_MODEL, load, resolve
from embedops.quantize.drift import built_in_texts
from embedops.quantize.kernels import cpu_class
from embedops.serve.engine import Engine

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def minilm_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("q") / "minilm-int8"
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
    return output


def test_seed_script_quantizes_the_default_model_to_int8(minilm_int8: Path) -> None:
    output = minilm_int8
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


def lowest_cosine_in_batches(embed, texts: list[str], sizes: tuple[int, ...] = (8, 32), rounds: int = 5) -> float:
    """Lowest cosine between a text's vector alone and its vector inside random batches of other texts."""
    alone = np.stack([embed([text])[0] for text in texts])
    rng = random.Random(0)
    lowest = 1.0
    for size in sizes:
        for _ in range(rounds):
            chosen = rng.sample(range(len(texts)), size)
            batched = embed([texts[i] for i in chosen])
            lowest = min(lowest, float((batched * alone[chosen]).sum(axis=1).min()))
    return lowest


@pytest.fixture(scope="module")
def served(minilm_int8: Path, launch_server) -> Iterator[str]:
    command = [sys.executable, "-m", "embedops", "serve", "--model", str(minilm_int8), "--no-access-log"]
    url, process = launch_server(command, {})
    yield url
    process.kill()
    process.wait()


def test_int8_gives_a_text_the_same_vector_alone_and_in_any_batch(minilm_int8: Path, served: str) -> None:
    """The dynamic int8 graph moved a text's vector with its batch (lowest cosine 0.94 on these texts);
    the rowwise graph scales activations per row, so neighbours and padding change nothing."""
    texts = built_in_texts()[:80]
    engine = Engine(resolve(minilm_int8))
    in_process = lowest_cosine_in_batches(lambda batch: engine.embed(engine.tokenize(batch, truncate=True)), texts)
    assert in_process >= 0.99999

    def over_http(batch: list[str]) -> np.ndarray:
        response = httpx.post(f"{served}/embed", json={"inputs": batch}, timeout=60)
        assert response.status_code == 200, response.text
        return np.asarray(response.json()["embeddings"], dtype=np.float32)

    assert lowest_cosine_in_batches(over_http, texts) >= 0.99999
    info = httpx.get(f"{served}/info").json()
    assert info["batch_invariant"] is True and info["quantization"]["method"] == "onnx-rowwise-int8"
    assert info["cpu"] == cpu_class() == info["quantization"]["cpu"]["class"]  # built here: no warning
