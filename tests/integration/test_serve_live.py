"""The seed's serve path end to end: `scripts/serve_embedding_model.py` in its own process with the
bundled model, spoken to by the openai SDK, huggingface_hub's InferenceClient, curl and raw httpx."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MAX_QUEUE = 8
TEXT = (
    "The quick brown fox jumps over the lazy dog while the committee reviews the quarterly report on "
    "vector databases, retrieval quality and the latency budget of the embedding service in production"
)


@pytest.fixture(scope="module")
def reference_model():
    from embedops.models import load

    return load("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


@pytest.fixture(scope="module")
def live(launch_server) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    from embedops.models import resolve

    model = str(resolve("sentence-transformers/all-MiniLM-L6-v2").path)
    command = [sys.executable, str(ROOT / "scripts" / "serve_embedding_model.py"), "--model", model]
    url, process = launch_server([*command, "--normalize", "--no-access-log"], {"SERVE_MAX_QUEUE": str(MAX_QUEUE)})
    yield url, process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_seed_smoke_curl_jq_prints_dim(live: tuple[str, subprocess.Popen[bytes]]) -> None:
    if not (shutil.which("curl") and shutil.which("jq")):
        pytest.skip("curl and jq are needed for the seed's smoke test")
    url, _ = live
    shell = (
        f"curl -s -X POST {url}/embed -H 'Content-Type: application/json' "
        '-d \'{"inputs":["hello","world"]}\' | jq \'.dim\''
    )
    assert subprocess.run(shell, shell=True, capture_output=True, text=True, check=True).stdout.strip() == "384"


def test_openai_sdk_float_and_base64(live: tuple[str, subprocess.Popen[bytes]], reference_model) -> None:
    from openai import OpenAI

    url, _ = live
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    texts = ["hello world", TEXT]
    expected = reference_model.encode(texts)
    as_float = client.embeddings.create(model="any", input=texts, encoding_format="float")
    np.testing.assert_allclose([d.embedding for d in as_float.data], expected, atol=1e-5)
    as_base64 = client.embeddings.create(model="any", input=texts, encoding_format="base64")
    decoded = [np.frombuffer(base64.b64decode(d.embedding), "<f4") for d in as_base64.data]
    np.testing.assert_allclose(decoded, expected, atol=1e-5)
    # Without encoding_format the SDK asks for base64 itself and decodes it to floats.
    default = client.embeddings.create(model="any", input=texts)
    np.testing.assert_allclose([d.embedding for d in default.data], expected, atol=1e-5)
    assert as_float.usage.prompt_tokens == default.usage.total_tokens > 0
    short = client.embeddings.create(model="any", input="hello world", dimensions=64)
    assert len(short.data[0].embedding) == 64
    assert abs(np.linalg.norm(short.data[0].embedding) - 1) < 1e-5


def test_huggingface_inference_client(live: tuple[str, subprocess.Popen[bytes]], reference_model) -> None:
    url, _ = live
    # huggingface_hub's offline mode refuses every URL, loopback included, so the client runs online
    # in its own process; it only ever talks to this server.
    script = (
        "import sys, json; from huggingface_hub import InferenceClient; "
        "print(json.dumps(InferenceClient(model=sys.argv[1]).feature_extraction('hello world').tolist()))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "0"}
    done = subprocess.run([sys.executable, "-c", script, url], env=env, capture_output=True, text=True, check=True)
    np.testing.assert_allclose(json.loads(done.stdout), reference_model.encode(["hello world"]), atol=1e-5)


def test_endpoint_encoder_for_evaluation(live: tuple[str, subprocess.Popen[bytes]], reference_model) -> None:
    from embedops.serve.client import EndpointEncoder

    url, _ = live
    texts = [f"{TEXT} {i}" for i in range(5)]
    encoder = EndpointEncoder(url)
    np.testing.assert_allclose(encoder.encode(texts, batch_size=2), reference_model.encode(texts), atol=1e-5)
    assert encoder.name == url


def test_eval_compares_a_live_endpoint_with_the_model_it_serves(
    live: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """A/B of production against a candidate: `embedops eval --model DIR --model URL` in one call."""

    from embedops.cli import main
    from embedops.models import resolve

    url, _ = live
    triples = tmp_path / "triples.tsv"
    topics = ["backup", "login", "upload", "billing", "search", "printer"]
    triples.write_text(
        "".join(
            f"how to fix {t} issue {i}\t{t} issue {i} is fixed by a restart\t{topics[i - 1]} page\n"
            for i, t in enumerate(topics)
        )
    )
    report = tmp_path / "ab.json"
    model_dir = str(resolve("sentence-transformers/all-MiniLM-L6-v2").path)
    assert (
        main(["eval", "--model", model_dir, "--model", f"{url}/embed", "--data", str(triples), "--json", str(report)])
        == 0
    )
    models = json.loads(report.read_text())["models"]
    local, served = (entry["metrics"] for entry in models)
    assert local.keys() == served.keys()
    for metric, value in local.items():
        assert served[metric] == pytest.approx(value, abs=1e-6), metric


def test_burst_of_four_times_capacity(live: tuple[str, subprocess.Popen[bytes]], reference_model) -> None:
    url, _ = live
    texts = [f"{TEXT} request {i}" for i in range(8)]
    expected = reference_model.encode(texts)

    async def burst() -> list[tuple[int, float, httpx.Response]]:
        limits = httpx.Limits(max_connections=4 * MAX_QUEUE)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

            async def one() -> tuple[int, float, httpx.Response]:
                started = time.perf_counter()
                response = await client.post("/embed", json={"inputs": texts})
                return response.status_code, time.perf_counter() - started, response

            return await asyncio.gather(*(one() for _ in range(4 * MAX_QUEUE)))

    results = asyncio.run(burst())
    statuses = [status for status, _, _ in results]
    assert all(status in (200, 429) for status in statuses), statuses
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
    for status, seconds, response in results:
        if status == 429:
            assert response.headers["retry-after"] == "1" and response.json()["error_type"] == "queue_full"
            assert seconds < 2.0
        else:
            np.testing.assert_allclose(response.json()["embeddings"], expected, atol=1e-5)
    metrics = httpx.get(f"{url}/metrics").text
    assert f'embedops_failures_total{{reason="queue_full"}} {float(statuses.count(429))}' in metrics


def test_sigterm_drains_requests_in_flight(live: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, process = live

    async def in_flight_then_term() -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            requests = [asyncio.ensure_future(client.post("/embed", json={"inputs": [TEXT] * 32})) for _ in range(4)]
            await asyncio.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            return [r.status_code for r in await asyncio.gather(*requests)]

    assert asyncio.run(in_flight_then_term()) == [200] * 4
    # uvicorn re-raises the signal once drained, so the exit status is the signal's.
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)
