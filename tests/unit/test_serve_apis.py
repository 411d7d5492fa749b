"""The routes and shapes other projects' clients call, over real HTTP with the tiny model: TEI's
/embed, /tokenize, /decode, /health and response headers; OpenAI's model list (through the `openai`
SDK); the content-type rule; the served model's name; the key from a file."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_serve_app import LIMITS, run_server

from embedops.cli import main
from embedops.models import resolve
from embedops.serve.engine import Engine
from embedops.serve.settings import ServeSettings

TEI_HEADERS = ("x-compute-time", "x-compute-tokens", "x-total-tokens", "x-queue-time", "x-inference-time")


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine(resolve(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def tei(engine: Engine) -> Iterator[httpx.Client]:
    """A server in TEI mode, under a name of the team's choosing."""
    settings = ServeSettings(model=str(engine.ref.path), embed_api="tei", served_model_name="team-model", **LIMITS)
    for url in run_server(settings, engine):
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client


def test_tei_mode_embed_is_a_bare_matrix_with_tei_defaults_and_headers(tei: httpx.Client, engine: Engine) -> None:
    texts = ["hello world", "vector search"]
    # LangChain's HuggingFaceInferenceAPIEmbeddings adds `options`, which TEI ignores: so do we.
    response = tei.post("/embed", json={"inputs": texts, "options": {"wait_for_model": True}})
    assert response.status_code == 200
    expected = engine.model.encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(np.array(response.json()), expected, atol=1e-5)
    tokens = sum(map(len, engine.tokenize(texts, truncate=True)))
    assert int(response.headers["x-compute-tokens"]) == int(response.headers["x-total-tokens"]) == tokens
    assert int(response.headers["x-compute-characters"]) == sum(map(len, texts))
    for header in TEI_HEADERS:
        assert int(response.headers[header]) >= 0, header
    cut = tei.post("/embed", json={"inputs": "hello", "dimensions": 8}).json()[0]
    assert len(cut) == 8 and np.linalg.norm(cut) == pytest.approx(1.0, abs=1e-5)
    wrong_type = tei.post("/embed", json={"inputs": "x", "truncate": "yes"})
    assert wrong_type.status_code == 422 and wrong_type.json()["error_type"] == "invalid_request"


def test_tokenize_gives_tei_tokens_with_byte_spans_and_decode_inverts_it(tei: httpx.Client, engine: Engine) -> None:
    text = "Héllo world"  # é is two bytes: spans after it are byte offsets, as TEI's are
    rows = tei.post("/tokenize", json={"inputs": [text, "vector"], "ignored": 1}).json()
    assert len(rows) == 2
    tokens = rows[0]
    assert [t["id"] for t in tokens] == engine.tokenize([text], truncate=True)[0]
    assert tokens[0] == {"id": tokens[0]["id"], "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert tokens[1] == {"id": tokens[1]["id"], "text": "Héllo", "special": False, "start": 0, "stop": 6}
    assert tokens[2]["text"] == "world" and (tokens[2]["start"], tokens[2]["stop"]) == (7, 12)
    bare = tei.post("/tokenize", json={"inputs": text, "add_special_tokens": False}).json()
    assert [t["id"] for t in bare[0]] == [t["id"] for t in tokens[1:-1]]
    ids = [t["id"] for t in tokens]
    assert tei.post("/decode", json={"ids": ids}).json() == ["hello world"]
    assert (
        tei.post("/decode", json={"ids": [ids, ids], "skip_special_tokens": False}).json()
        == ["[CLS] hello world [SEP]"] * 2
    )
    outside = tei.post("/decode", json={"ids": [10**7]})
    assert outside.status_code == 422 and "vocabulary" in outside.json()["error"]


def test_health_models_and_the_embeddings_alias(tei: httpx.Client) -> None:
    health = tei.get("/health")
    assert health.status_code == 200 and health.content == b""
    for path in ("/v1/models", "/models"):
        listing = tei.get(path).json()
        assert listing["object"] == "list" and [m["id"] for m in listing["data"]] == ["team-model"]
    body = {"input": ["alias"], "model": "team-model"}
    alias, canonical = tei.post("/embeddings", json=body).json(), tei.post("/v1/embeddings", json=body).json()
    assert alias["model"] == canonical["model"] == "team-model" == tei.get("/info").json()["model"]
    np.testing.assert_allclose(alias["data"][0]["embedding"], canonical["data"][0]["embedding"], atol=1e-6)


def test_openai_sdk_lists_the_served_model(tei: httpx.Client) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{tei.base_url}/v1", api_key="unused")
    assert [model.id for model in client.models.list()] == ["team-model"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
@pytest.mark.parametrize("path", ["/embed", "/", "/v1/embeddings", "/tokenize"])
def test_bodies_not_declared_json_are_refused_with_415(tei: httpx.Client, path: str, content_type: str | None) -> None:
    # A web page may POST text/plain cross-origin without a preflight; it must not reach the model.
    headers = {"content-type": content_type} if content_type else {}
    body = {"input": "x"} if path.startswith("/v1/") else {"inputs": "x"}
    response = tei.post(path, content=json.dumps(body).encode(), headers=headers)
    assert response.status_code == 415
    error = response.json()
    message = error["error"]["message"] if path.startswith("/v1/") else error["error"]
    assert "application/json" in message
    assert tei.post(path, json=body).status_code == 200


def test_a_missing_key_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--api-key-file", str(tmp_path / "absent")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: invalid serve settings: cannot read the API key file") and "\n" not in error
    (tmp_path / "key").write_text("k")
    assert main(["serve", "--api-key-file", str(tmp_path / "key"), "--api-key", "k"]) == 2
    assert "not both" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_precisions_are_sentence_transformers_quantized_vectors(
    tei: httpx.Client, engine: Engine, precision: str
) -> None:
    from sentence_transformers.quantization import quantize_embeddings

    from embedops.quantize.drift import built_in_texts

    texts = ["hello world", "vector search", "a third, longer text about storage costs"]
    floats = np.array(tei.post("/embed", json={"inputs": texts}).json(), dtype=np.float32)
    codes = np.array(tei.post("/embed", json={"inputs": texts, "precision": precision}).json())
    # The tiny model's artifact has no ranges file: the server measured them on the built-in texts.
    calibration = built_in_texts()
    own = np.vstack(
        [engine.embed(engine.tokenize(calibration[i : i + 32], truncate=True)) for i in range(0, len(calibration), 32)]
    )
    ranges = np.vstack([own.min(axis=0), own.max(axis=0)])
    theirs = quantize_embeddings(floats, precision, ranges=ranges)
    assert codes.shape == theirs.shape and codes.dtype.kind == "i"
    if precision.endswith("int8"):
        # sentence-transformers truncates toward zero where we round to the nearest code (at most one
        # apart), and lets values outside the ranges wrap around where we clip them to the end codes.
        lowest = -128 if precision == "int8" else 0
        scaled = (floats - ranges[0]) / ((ranges[1] - ranges[0]) / 255) + lowest
        inside = (scaled >= lowest) & (scaled <= lowest + 255)
        assert np.abs(codes - theirs.astype(np.int64))[inside].max() <= 1
        np.testing.assert_array_equal(codes[~inside], np.where(scaled[~inside] < lowest, lowest, lowest + 255))
    else:
        np.testing.assert_array_equal(codes, theirs)
    assert tei.get("/info").json()["int8_ranges"].startswith("measured on first use")
    b64 = tei.post("/v1/embeddings", json={"input": texts, "precision": precision, "encoding_format": "base64"})
    raw = [np.frombuffer(base64.b64decode(row["embedding"]), dtype=theirs.dtype) for row in b64.json()["data"]]
    np.testing.assert_array_equal(np.vstack(raw), codes)


def test_a_quantized_artifact_carries_its_own_int8_ranges(onnx_artifact: Path) -> None:
    import asyncio
    import json

    from embedops.serve.metrics import ServeMetrics
    from embedops.serve.service import EmbeddingService

    record = json.loads((onnx_artifact / "output_ranges.json").read_text())
    assert len(record["low"]) == len(record["high"]) == 32 and record["texts"] > 0
    assert all(low <= high for low, high in zip(record["low"], record["high"], strict=True))
    service = EmbeddingService(ServeSettings(), Engine(resolve(onnx_artifact)), ServeMetrics())
    ranges = asyncio.run(service.ranges())
    assert ranges.low == record["low"] and service.ranges_source is not None
    assert service.ranges_source.startswith("artifact")
