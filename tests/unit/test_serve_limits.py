"""What keeps one client from hurting the others, over real sockets with the tiny model: admission
before the body is read, deadlines for headers and bodies, header limits, and fair batching."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from test_serve_app import LIMITS, run_server

from embedops.models import resolve
from embedops.serve import protocol
from embedops.serve.batcher import Batcher, BatchLimits
from embedops.serve.engine import Engine
from embedops.serve.metrics import ServeMetrics
from embedops.serve.settings import ServeSettings


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine(resolve(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def url(engine: Engine) -> Iterator[str]:
    """One admission place, a half-second body deadline and a one-second header deadline."""
    patch = pytest.MonkeyPatch()
    patch.setattr(protocol, "HEADER_TIMEOUT_SECONDS", 1.0)
    settings = ServeSettings(model=str(engine.ref.path), **{**LIMITS, "max_queue": 1}, body_timeout=0.5)
    yield from run_server(settings, engine)
    patch.undo()


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_a_post_waiting_for_its_body_holds_the_only_place_and_the_next_is_refused_at_once(url: str) -> None:
    with _connect(url) as slow:
        slow.sendall(
            b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        time.sleep(0.1)
        started = time.perf_counter()
        refused = httpx.post(f"{url}/embed", json={"inputs": "x"})
        elapsed = time.perf_counter() - started
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error_type"] == "queue_full" and elapsed < 0.25  # before its body was read
        status, _, body = _response(slow)  # the trickling body runs out of time
        assert status == 408 and json.loads(body)["error_type"] == "request_timeout"
    assert httpx.post(f"{url}/embed", json={"inputs": "x"}).status_code == 200  # the place is free again
    assert httpx.get(f"{url}/healthz").status_code == 200  # GETs never take a place


def test_headers_that_trickle_are_cut_off(url: str) -> None:
    counted = _failures(url, "request_timeout")
    with _connect(url) as slow:
        slow.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\n")
        started = time.perf_counter()
        status, headers, body = _response(slow)
        assert status == 408 and headers["connection"] == "close" and 0.9 < time.perf_counter() - started < 5
        assert json.loads(body)["error_type"] == "request_timeout"
    assert _failures(url, "request_timeout") == counted + 1


@pytest.mark.parametrize(
    "extra",
    [
        b"".join(b"X-Filler-%d: a\r\n" % i for i in range(protocol.MAX_HEADERS + 1)),
        b"X-Big: " + b"a" * (protocol.MAX_HEADER_BYTES + 1) + b"\r\n",
    ],
    ids=["count", "size"],
)
def test_too_many_or_too_large_headers_are_431(url: str, extra: bytes) -> None:
    counted = _failures(url, "headers_too_large")
    with _connect(url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
        status, _, body = _response(sock)
        assert status == 431 and json.loads(body)["error_type"] == "headers_too_large"
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert _failures(url, "headers_too_large") == counted + 1  # refused before the app, counted all the same


def _failures(url: str, reason: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f'embedops_failures_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_a_request_is_batched_after_one_round_of_a_larger_one(engine: Engine) -> None:
    """Queue order is per-request rounds of one batch: a request that arrives behind one of 64 inputs
    gets its first round into the second batch, not after all four of the large one's."""

    async def order() -> list[list[str]]:
        batcher = Batcher(engine, ServeMetrics(), BatchLimits(batch_size=16, max_batch_tokens=4096))
        large = batcher.submit([[101, 2000 + i, *range(3000, 3040), 102] for i in range(64)])
        later = batcher.submit([[101, *range(3000, 3040), 102] for _ in range(16)])  # 672 tokens: not express
        batches = []
        while batch := batcher._take_batch():
            batches.append(["large" if item.job is large else "later" for item in batch])
        assert later is not large
        return batches

    batches = asyncio.run(order())
    assert batches[0] == ["large"] * 16  # the large request's first round was already ahead of it
    assert batches[1] == ["later"] * 16 and sum(map(len, batches)) == 80


def test_a_small_request_runs_beside_a_batch_that_holds_the_engine(engine: Engine) -> None:
    release = threading.Event()

    class Held(Engine):
        def embed(self, batch: list[list[int]], **options: Any) -> np.ndarray:
            if len(batch) > 1:  # the large request's batch holds its thread until released
                release.wait(30)
            return super().embed(batch, **options)

    held = Held(engine.ref, device="cpu")

    async def run() -> tuple[bool, bool]:
        batcher = Batcher(held, ServeMetrics(), BatchLimits(batch_size=8, max_batch_tokens=4096))
        batcher.start()
        large = batcher.embed([[101, 2000 + i, *range(3000, 3100), 102] for i in range(8)])
        await asyncio.sleep(0.2)
        small = await asyncio.wait_for(batcher.embed([[101, 7592, 102]]), 10)
        large_waiting = not large.done()
        release.set()
        await large
        await batcher.close()
        return small.shape == (1, held.info.dim), large_waiting

    assert asyncio.run(run()) == (True, True)


class _CountingReleases(Engine):
    """The real engine, counting how often it gives memory back."""

    releases = 0

    def release_memory(self) -> None:
        self.releases += 1
        super().release_memory()


def test_the_engine_gives_memory_back_once_idle_after_a_large_batch(onnx_artifact: Path) -> None:
    engine = _CountingReleases(resolve(onnx_artifact))
    large = [engine.tokenizer.wrap([2000 + i % 50] * 62) for i in range(80)]  # 80 x 64 padded tokens > 1024

    async def run() -> tuple[int, int]:
        batcher = Batcher(engine, ServeMetrics(), BatchLimits(batch_size=128, max_batch_tokens=16384))
        batcher.start()
        vectors = await batcher.embed(large)
        await asyncio.sleep(0.2)
        after_large = engine.releases
        await batcher.embed(large[:2])  # small: nothing held to give back
        await asyncio.sleep(0.2)
        await batcher.close()
        assert vectors.shape == (80, engine.info.dim)
        return after_large, engine.releases

    assert asyncio.run(run()) == (1, 1)
    np_vectors = engine.embed(large[:2])
    engine.release_memory()
    assert (engine.embed(large[:2]) == np_vectors).all()  # shrinking the arena changes no result


def test_memory_is_given_back_when_the_last_lane_ends_not_the_first(onnx_artifact: Path) -> None:
    """Two lanes: a large batch ends on one while another large batch still runs on the other. The
    release waits for the second, which would otherwise keep what it took."""
    second_may_end = threading.Event()
    second_started = threading.Event()
    releases: list[bool] = []  # whether the held batch had ended when memory was released

    class Lanes(Engine):
        def embed(self, batch: list[list[int]], **options: Any) -> np.ndarray:
            if batch[0][1] == 2999:  # the first request's batch runs until released
                second_started.set()
                second_may_end.wait(30)
            return super().embed(batch, **options)

        def release_memory(self) -> None:
            releases.append(second_may_end.is_set())
            super().release_memory()

    engine = Lanes(resolve(onnx_artifact))
    large = [engine.tokenizer.wrap([2000 + i % 50] * 62) for i in range(20)]  # 20 x 64 tokens > 1024

    async def run() -> None:
        batcher = Batcher(engine, ServeMetrics(), BatchLimits(concurrency=2, batch_size=32, max_batch_tokens=16384))
        batcher.start()
        held = batcher.embed([engine.tokenizer.wrap([2999] * 62)] * 20)
        await asyncio.to_thread(second_started.wait, 30)
        await batcher.embed(large)  # ends on the other lane while the held batch runs
        await asyncio.sleep(0.2)
        assert releases == []
        second_may_end.set()
        await held
        await asyncio.sleep(0.2)
        await batcher.close()

    asyncio.run(run())
    assert releases == [True]


def test_memory_is_given_back_after_a_large_request_in_small_batches(onnx_artifact: Path) -> None:
    """At the CPU's 512 tokens a batch no batch is large, but a request of 1,280 tokens still leaves
    its body, ids and vectors behind: memory is given back once the server is idle."""
    engine = _CountingReleases(resolve(onnx_artifact))
    request = [engine.tokenizer.wrap([2000 + i % 50] * 62) for i in range(20)]  # 20 x 64 tokens

    async def run() -> list[int]:
        batcher = Batcher(engine, ServeMetrics(), BatchLimits(batch_size=32, max_batch_tokens=512))
        batcher.start()
        counts = []
        for inputs in (request[:8], request):  # 512 tokens, then 1,280
            await batcher.embed(inputs)
            await asyncio.sleep(0.2)
            counts.append(engine.releases)
        await batcher.close()
        return counts

    assert asyncio.run(run()) == [0, 1]
