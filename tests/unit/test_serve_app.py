"""The server over real HTTP (uvicorn in a thread of this process) with the tiny model: every route,
every refusal, and the metrics they leave behind."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from embedops.models import resolve
from embedops.serve.app import create_app
from embedops.serve.engine import Engine
from embedops.serve.protocol import GuardedHttpToolsProtocol
from embedops.serve.settings import ServeSettings

LIMITS = {"max_inputs": 8, "max_chars": 400, "max_body_bytes": 4096, "max_queue": 64}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_server(settings: ServeSettings, engine: Engine) -> Iterator[str]:
    """uvicorn serving `create_app` on a free loopback port until the test module ends."""
    import uvicorn

    config = uvicorn.Config(
        create_app(settings, engine),
        host="127.0.0.1",
        port=free_port(),
        log_level="warning",
        loop="uvloop",
        http=GuardedHttpToolsProtocol,
        access_log=False,
        timeout_graceful_shutdown=settings.graceful_timeout,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").json()["status"] != "warming up":
                break
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine(resolve(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def url(engine: Engine) -> Iterator[str]:
    yield from run_server(ServeSettings(model=str(engine.ref.path), **LIMITS), engine)


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


def reference(engine: Engine, texts: list[str]) -> np.ndarray:
    return engine.model.encode(texts, convert_to_numpy=True)


def test_seed_embed_matches_in_process_encode(client: httpx.Client, engine: Engine) -> None:
    texts = ["hello world", "vector database", "a somewhat longer sentence about embeddings " * 3]
    response = client.post("/embed", json={"inputs": texts})
    assert response.status_code == 200
    body = response.json()
    assert body["dim"] == 32 and body["model"] == engine.ref.path.name == "tiny-model"  # a name, not a path
    assert body["usage"]["tokens"] == sum(len(ids) for ids in engine.tokenize(texts, truncate=True))
    np.testing.assert_allclose(np.array(body["embeddings"]), reference(engine, texts), atol=1e-5)


def test_single_string_input_gives_one_row(client: httpx.Client) -> None:
    body = client.post("/embed", json={"inputs": "hello"}).json()
    assert len(body["embeddings"]) == 1 and len(body["embeddings"][0]) == 32


def test_dimensions_truncate_and_renormalise_on_every_route(client: httpx.Client, engine: Engine) -> None:
    # The server's normalize default is off; the model's own vectors are unit length, so a cut one is too.
    assert engine.info.model_normalizes and client.get("/info").json()["normalize"] is False
    full = reference(engine, ["hello"])[0]
    expected = full[:8] / np.linalg.norm(full[:8])
    seed = client.post("/embed", json={"inputs": ["hello"], "dimensions": 8}).json()
    tei = client.post("/", json={"inputs": "hello", "dimensions": 8, "normalize": True}).json()
    openai = client.post("/v1/embeddings", json={"input": "hello", "dimensions": 8, "model": "x"}).json()
    for vector in (seed["embeddings"][0], tei[0], openai["data"][0]["embedding"]):
        np.testing.assert_allclose(vector, expected, atol=1e-6)


def test_tei_route_returns_bare_matrix(client: httpx.Client, engine: Engine) -> None:
    body = client.post("/", json={"inputs": ["a", "b"], "truncate": True}).json()
    np.testing.assert_allclose(np.array(body), reference(engine, ["a", "b"]), atol=1e-5)
    ids = engine.tokenize(["a", "b"], truncate=True)
    np.testing.assert_allclose(client.post("/", json={"inputs": ids}).json(), body, atol=1e-5)
    seed = client.post("/embed", json={"inputs": ids[0]}).json()
    np.testing.assert_allclose(seed["embeddings"], body[:1], atol=1e-5)
    with_prompt = client.post("/", json={"inputs": ids, "prompt_name": "query"})
    assert with_prompt.status_code == 422 and with_prompt.json()["error_type"] == "invalid_request"


def test_openai_float_base64_and_token_ids(client: httpx.Client, engine: Engine) -> None:
    texts = ["first text", "second text"]
    floats = client.post("/v1/embeddings", json={"input": texts, "model": "m"}).json()
    b64 = client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"}).json()
    assert floats["object"] == "list" and [d["index"] for d in floats["data"]] == [0, 1]
    assert floats["usage"]["prompt_tokens"] == floats["usage"]["total_tokens"] > 0
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in b64["data"]])
    np.testing.assert_allclose(decoded, [d["embedding"] for d in floats["data"]], atol=1e-6)
    np.testing.assert_allclose(decoded, reference(engine, texts), atol=1e-5)
    ids = engine.tokenize(texts, truncate=True)
    by_ids = client.post("/v1/embeddings", json={"input": ids}).json()
    np.testing.assert_allclose([d["embedding"] for d in by_ids["data"]], decoded, atol=1e-5)
    one = client.post("/v1/embeddings", json={"input": ids[0]}).json()
    np.testing.assert_allclose(one["data"][0]["embedding"], decoded[0], atol=1e-5)


def test_long_input_truncates_by_default_and_refuses_when_asked(client: httpx.Client, engine: Engine) -> None:
    long_text = "word " * 70  # 70 tokens > the tiny model's 64-token window, under the char limit
    ok = client.post("/embed", json={"inputs": [long_text]})
    assert ok.status_code == 200
    np.testing.assert_allclose(ok.json()["embeddings"], reference(engine, [long_text]), atol=1e-5)
    refused = client.post("/embed", json={"inputs": [long_text], "truncate": False})
    assert refused.status_code == 413 and refused.json()["error_type"] == "input_too_long"
    left = client.post("/", json={"inputs": long_text, "truncation_direction": "Left"})
    assert left.status_code == 200
    # The same text as token ids with its special tokens is cut to the same window, closing token kept.
    ids = engine.tokenizer.wrap(engine.tokenizer.content_ids([long_text])[0])
    by_ids = client.post("/v1/embeddings", json={"input": ids}).json()["data"][0]["embedding"]
    np.testing.assert_allclose(by_ids, ok.json()["embeddings"][0], atol=1e-5)


@pytest.mark.parametrize(
    ("path", "content", "status", "code"),
    [
        ("/embed", b"{not json", 422, "invalid_request"),
        ("/embed", b'{"inputs": 5}', 422, "invalid_request"),
        ("/embed", b'{"inputs": []}', 422, "invalid_request"),
        ("/embed", b'{"inputs": ["ok", ""]}', 422, "invalid_request"),
        ("/embed", b'{"inputs": "x", "normalize": "yes"}', 422, "invalid_request"),
        ("/embed", b'{"inputs": "x", "unknown": 1}', 422, "invalid_request"),
        ("/embed", b'{"inputs": "x", "dimensions": 33}', 422, "invalid_request"),
        ("/embed", b'{"inputs": "x", "prompt_name": "no-such-prompt"}', 422, "invalid_request"),
        ("/embed", b'{"inputs": ["a","b","c","d","e","f","g","h","i"]}', 413, "too_many_inputs"),
        ("/embed", b'{"inputs": "' + b"x" * 401 + b'"}', 413, "input_too_long"),
        ("/embed", b'{"inputs": "' + b"x" * 5000 + b'"}', 413, "payload_too_large"),
        ("/", b"[]", 422, "invalid_request"),
        ("/nowhere", b"{}", 404, "not_found"),
    ],
)
def test_refusals_are_json_with_a_message(
    client: httpx.Client, path: str, content: bytes, status: int, code: str
) -> None:
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    body = response.json()
    assert body["error_type"] == code and body["error"]


def test_openai_errors_use_openai_shape(client: httpx.Client) -> None:
    response = client.post("/v1/embeddings", json={"input": [], "model": "m"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == "input"
    ids = client.post("/v1/embeddings", json={"input": [[10**9]]})
    assert ids.status_code == 422 and "vocabulary" in ids.json()["error"]["message"]


def test_wrong_method_is_405_json(client: httpx.Client) -> None:
    response = client.get("/embed")
    assert response.status_code == 405 and response.json()["error_type"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"


def test_a_client_that_hangs_up_mid_body_is_a_499_not_a_server_error(client: httpx.Client) -> None:
    before = _samples(client)
    host, port = client.base_url.host, client.base_url.port
    with socket.create_connection((host, port)) as raw:
        head = f"POST /v1/embeddings HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        raw.sendall(f"{head}Content-Length: 1000\r\n\r\n".encode() + b'{"input": "par')
    _wait_for(client, "embedops_requests_total", {"route": "/v1/embeddings", "status": "499"}, 1)
    after = _samples(client)
    server_errors = ("embedops_requests_total", (("route", "/v1/embeddings"), ("status", "500")))
    assert after.get(server_errors, 0) == before.get(server_errors, 0)


def test_health_ready_info(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    info = client.get("/info").json()
    assert info["dim"] == 32 and info["backend"] == "torch" and info["dtype"] == "fp32"
    assert info["model"] == "tiny-model" and "path" not in info  # never a server path
    assert info["max_seq_length"] == 64 and info["limits"]["max_inputs"] == 8 and info["version"]


def _samples(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_parse_and_count_requests(client: httpx.Client) -> None:
    before = _samples(client)
    for _ in range(3):
        assert client.post("/embed", json={"inputs": ["count me"]}).status_code == 200
    assert client.post("/embed", json={"inputs": []}).status_code == 422
    after = _samples(client)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("embedops_requests_total", route="/embed", status="200") == 3
    assert delta("embedops_requests_total", route="/embed", status="422") == 1
    assert delta("embedops_failures_total", reason="invalid_request") == 1
    assert delta("embedops_request_duration_seconds_count", route="/embed") == 4
    assert delta("embedops_batch_size_count") >= 1 and delta("embedops_input_tokens_total") > 0
    assert ("embedops_in_flight_requests", ()) in after and ("embedops_queue_depth", ()) in after


def test_api_key_guards_api_routes_and_info_but_not_the_probes(engine: Engine, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")  # as a mounted Secret holds it, newline included
    settings = ServeSettings(model=str(engine.ref.path), api_key_file=key_file, **LIMITS)
    for url in run_server(settings, engine):
        with httpx.Client(base_url=url) as client:
            missing = client.post("/embed", json={"inputs": "x"})
            assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
            wrong = client.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
            unread = client.post("/embed", content=b"{not json", headers={"content-type": "application/json"})
            assert unread.status_code == 401  # the key is checked before the body is read
            good = client.post("/", json={"inputs": "x"}, headers={"Authorization": "Bearer s3cret"})
            assert good.status_code == 200
            for probe in ("/healthz", "/readyz", "/health"):
                assert client.get(probe).status_code == 200, probe
            for guarded in ("/info", "/metrics", "/v1/models"):
                assert client.get(guarded).status_code == 401, guarded
                assert client.get(guarded, headers={"Authorization": "Bearer s3cret"}).status_code == 200, guarded
    opened = ServeSettings(model=str(engine.ref.path), api_key="s3cret", protect_info=False, **LIMITS)
    for url in run_server(opened, engine):
        assert httpx.get(f"{url}/metrics").status_code == 200 and httpx.get(f"{url}/info").json()["auth"] is True


def test_openapi_documents_the_embedding_request_bodies(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, field in (("/embed", "inputs"), ("/", "inputs"), ("/v1/embeddings", "input")):
        schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert field in schema["properties"] and field in schema["required"]


class GatedEngine(Engine):
    """The tiny model's real engine, held before each batch until the test opens the gate."""

    def __init__(self, path: Path) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = False
        super().__init__(resolve(path), device="cpu")

    def embed(self, batch: list[list[int]], **options: Any) -> np.ndarray:
        assert self.gate.wait(timeout=30)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("out of memory")
        return super().embed(batch, **options)


@pytest.fixture(scope="module")
def gated(tiny_model_dir: Path) -> Iterator[tuple[str, GatedEngine]]:
    engine = GatedEngine(tiny_model_dir)
    for url in run_server(ServeSettings(model=str(tiny_model_dir), **LIMITS), engine):
        yield url, engine


def _wait_for(client: httpx.Client, sample: str, labels: dict[str, str], value: float) -> None:
    deadline = time.monotonic() + 30
    while _samples(client).get((sample, tuple(sorted(labels.items()))), 0) < value:
        assert time.monotonic() < deadline, f"{sample}{labels} never reached {value}"
        time.sleep(0.01)


def test_work_of_a_client_that_hung_up_never_reaches_the_model(gated: tuple[str, GatedEngine]) -> None:
    url, engine = gated
    with httpx.Client(base_url=url, timeout=30) as client, ThreadPoolExecutor(1) as pool:
        before = _samples(client)
        engine.gate.clear()
        first = pool.submit(client.post, "/embed", json={"inputs": ["waits for the gate"]})
        _wait_for(client, "embedops_queue_seconds_count", {}, before.get(("embedops_queue_seconds_count", ()), 0) + 1)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/embed", json={"inputs": ["leaves", "early"]}, timeout=0.3)
        _wait_for(client, "embedops_requests_total", {"route": "/embed", "status": "499"}, 1)
        engine.gate.set()
        assert first.result().status_code == 200
        after = _samples(client)
    batched = after[("embedops_batch_size_sum", ())] - before.get(("embedops_batch_size_sum", ()), 0)
    assert batched == 1  # the first request's input only
    assert after[("embedops_failures_total", (("reason", "client_disconnected"),))] == 1


def test_a_model_failure_is_a_json_500_and_the_server_carries_on(gated: tuple[str, GatedEngine]) -> None:
    url, engine = gated
    engine.fail_next = True
    with httpx.Client(base_url=url, timeout=30) as client:
        failed = client.post("/v1/embeddings", json={"input": "x"})
        assert failed.status_code == 500
        error = failed.json()["error"]
        assert (error["type"], error["code"]) == ("server_error", "engine_error")
        assert "out of memory" in error["message"]
        assert client.post("/embed", json={"inputs": "x"}).status_code == 200
        assert ("embedops_requests_total", (("route", "/v1/embeddings"), ("status", "500"))) in _samples(client)


def test_a_request_outlasting_the_graceful_shutdown_gets_a_json_503(tiny_model_dir: Path) -> None:
    engine = GatedEngine(tiny_model_dir)
    server = run_server(ServeSettings(model=str(tiny_model_dir), graceful_timeout=1, **LIMITS), engine)
    url = next(server)
    with httpx.Client(base_url=url, timeout=30) as client, ThreadPoolExecutor(2) as pool:
        engine.gate.clear()
        held = pool.submit(client.post, "/v1/embeddings", json={"input": "held at the gate"})
        _wait_for(client, "embedops_queue_seconds_count", {}, 1)
        stopping = pool.submit(next, server, None)
        response = held.result()
        engine.gate.set()
        stopping.result()
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "shutting_down"


def test_a_failed_warm_up_fails_both_probes_with_the_reason(tiny_model_dir: Path) -> None:
    engine = GatedEngine(tiny_model_dir)
    engine.fail_next = True  # the warm-up batch, as when the model does not fit the device
    for url in run_server(ServeSettings(model=str(tiny_model_dir), **LIMITS), engine):
        for probe in ("/readyz", "/healthz"):
            response = httpx.get(url + probe)
            assert response.status_code == 503 and response.json()["status"] == "failed"
            assert "out of memory" in response.json()["error"]
        assert httpx.get(url + "/info").json()["ready"] is False
