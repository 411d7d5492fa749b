"""Other projects' clients, unmodified, against a real `embedops serve` of the bundled model's int8
ONNX artifact: LlamaIndex's and chromadb's TEI clients (which post to /embed and expect TEI's bare
matrix, so the server runs with `--embed-api tei`), LangChain's Inference API client on TEI's `/`,
and the openai SDK's model list. Every vector is checked against the model run in process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

KEY = "team-key"
TEXTS = ["What causes sea level rise?", "Thermal expansion of warming ocean water raises sea levels."]


@pytest.fixture(scope="module")
def bundled_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from embedops.quantize.config import QuantizeConfig
    from embedops.quantize.pipeline import quantize

    target = tmp_path_factory.mktemp("clients") / "minilm-int8"
    quantize(QuantizeConfig(model_path="sentence-transformers/all-MiniLM-L6-v2", output=str(target), dtype="int8"))
    return target


@pytest.fixture(scope="module")
def tei_server(launch_server, bundled_int8: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    key_file = tmp_path_factory.mktemp("secret") / "api-key"
    key_file.write_text(KEY)
    command = [sys.executable, "-m", "embedops", "serve", "--model", str(bundled_int8), "--no-access-log"]
    url, process = launch_server([*command, "--embed-api", "tei"], {"SERVE_API_KEY_FILE": str(key_file)})
    yield url
    _stop(process)


@pytest.fixture(scope="module")
def expected(bundled_int8: Path) -> np.ndarray:
    from embedops.models import resolve
    from embedops.serve.engine import Engine

    engine = Engine(resolve(bundled_int8))
    return engine.finish(engine.embed(engine.tokenize(TEXTS, truncate=True)), normalize=True, dimensions=None)


def test_llamaindex_text_embeddings_inference(tei_server: str, expected: np.ndarray) -> None:
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    embedder = TextEmbeddingsInference(model_name="minilm-int8", base_url=tei_server, auth_token=KEY)
    np.testing.assert_allclose(embedder.get_text_embedding_batch(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(embedder.get_query_embedding(TEXTS[0]), expected[0], atol=1e-5)


def test_chromadb_hugging_face_embedding_server(tei_server: str, expected: np.ndarray) -> None:
    from chromadb.utils.embedding_functions import HuggingFaceEmbeddingServer

    with pytest.warns(DeprecationWarning):  # chromadb prefers the key from an environment variable
        embed = HuggingFaceEmbeddingServer(url=f"{tei_server}/embed", api_key=KEY)
    np.testing.assert_allclose(np.array(embed(TEXTS)), expected, atol=1e-5)


def test_langchain_inference_api_embeddings_on_tei_root(tei_server: str, expected: np.ndarray) -> None:
    from langchain_community.embeddings import HuggingFaceInferenceAPIEmbeddings

    # It sends {"inputs": ..., "options": {...}}; TEI ignores `options`, and so do we.
    embedder = HuggingFaceInferenceAPIEmbeddings(api_key=KEY, api_url=f"{tei_server}/")
    np.testing.assert_allclose(embedder.embed_documents(TEXTS), expected, atol=1e-5)


def test_openai_sdk_models_list_and_embeddings(tei_server: str, expected: np.ndarray) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{tei_server}/v1", api_key=KEY)
    assert [model.id for model in client.models.list()] == ["minilm-int8"]
    response = client.embeddings.create(model="minilm-int8", input=TEXTS)
    np.testing.assert_allclose([row.embedding for row in response.data], expected, atol=1e-5)


def test_embedops_eval_endpoint_encoder_reads_the_tei_shape(tei_server: str, expected: np.ndarray) -> None:
    from embedops.serve.client import EndpointEncoder

    encoder = EndpointEncoder(tei_server, api_key=KEY)
    np.testing.assert_allclose(encoder.encode(TEXTS), expected, atol=1e-5)
    encoder.close()


def test_batches_run_in_lanes_of_the_cores_and_stay_exact(tei_server: str, expected: np.ndarray) -> None:
    """The ONNX engine runs one batch per core (up to 4), each session on its share of the cores, in
    CPU-sized batches, and many clients at once through those lanes get the vectors the model gives in
    process."""
    import httpx

    from embedops.serve.lanes import CPU_BATCH_TOKENS, auto_lanes, cores_per_worker

    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.get(f"{tei_server}/info", headers=headers).json()["limits"]
    cores = cores_per_worker()
    assert limits["concurrency"] == auto_lanes(cores) and limits["session_threads"] == cores // auto_lanes(cores)
    assert limits["max_batch_tokens"] == CPU_BATCH_TOKENS

    def post(index: int) -> np.ndarray:
        texts = [TEXTS[index % 2], TEXTS[(index + 1) % 2]] * (1 + index % 4)
        response = httpx.post(f"{tei_server}/embed", json={"inputs": texts}, headers=headers, timeout=60)
        response.raise_for_status()
        return np.asarray(response.json())[:2]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(32)))
    for index, answer in enumerate(answers):
        np.testing.assert_allclose(answer, expected if index % 2 == 0 else expected[::-1], atol=1e-5)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
