"""Serving throughput and latency against the same backend's in-process encode, on loopback only.

    python bench/serve_bench.py [--model DIR] [--onnx-model DIR] [--infinity PYTHON] [--seconds 4]

For each server (ours on the given models; Infinity's torch engine when --infinity names a Python
that has `infinity-emb[server,torch]`), it sends requests of 1 and 8 texts of ~40 words at
concurrency 1, 16 and 64, each cell bounded by --seconds and --max-requests, and prints texts/s,
p50/p95/p99 latency and two ratios measured in this run, per batch size: to sentence-transformers'
`encode` of the same artifact in process (what a user would call without a server), and to the
server's own engine called directly in process (tokenize + forward: what HTTP and batching cost).
Each baseline is the best of three windows alternating with the other, so the ratios err against us.
The load generator is aiohttp on the same cores as the server, so its CPU is part of every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import httpx
import numpy as np

WORDS = [
    "embedding",
    "service",
    "latency",
    "budget",
    "retrieval",
    "quality",
    "vector",
    "database",
    "quarterly",
    "report",
    "committee",
    "reviews",
    "production",
    "traffic",
    "workers",
    "queue",
    "batch",
    "tokens",
    "model",
]


def texts(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, 40)) for _ in range(count)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def in_process(model_dir: str, batch: int, seconds: float, rounds: int = 3) -> tuple[float, float]:
    """Best texts/s of sentence-transformers' `encode` and of the serving engine called directly.

    The two alternate over `rounds` short windows and each keeps its best window, so a slow moment
    of the shared CPU lowers neither baseline alone, and the served/baseline ratios err against us.
    """
    from embedops.models import load, resolve
    from embedops.serve.engine import Engine

    model = load(model_dir, device="cpu")
    engine = Engine(resolve(model_dir), device="cpu")
    engine.warmup()
    calls: dict[str, Callable[[list[str]], object]] = {
        "encode": lambda chunk: model.encode(chunk, batch_size=batch),
        "engine": lambda chunk: engine.embed(engine.tokenize(chunk, truncate=True)),
    }
    best = dict.fromkeys(calls, 0.0)
    for _ in range(rounds):
        for name, call in calls.items():
            best[name] = max(best[name], _rate(call, batch, seconds / rounds))
    return best["encode"], best["engine"]


def _rate(embed: Callable[[list[str]], object], batch: int, seconds: float) -> float:
    embed(texts(8))
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        embed(texts(batch, done))
        done += batch
    return done / (time.perf_counter() - started)


def start(command: list[str], url: str, health: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + health).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"server {' '.join(command)} did not start")


async def load_test(
    url: str, route: str, field: str, concurrency: int, batch: int, seconds: float, max_requests: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    payloads = [
        {field: texts(batch, i), "model": "m"} if field == "input" else {field: texts(batch, i)} for i in range(64)
    ]
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as c:

        async def post(payload: dict) -> None:
            async with c.post(route, json=payload) as response:
                response.raise_for_status()
                await response.read()

        async def worker(index: int) -> None:
            n = index
            while time.perf_counter() < deadline and len(latencies) < max_requests:
                began = time.perf_counter()
                await post(payloads[n % 64])
                latencies.append(time.perf_counter() - began)
                n += concurrency

        await post(payloads[0])
        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies) * batch / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--onnx-model", help="an int8 ONNX artifact to serve as well")
    parser.add_argument("--infinity", help="python of a virtualenv with infinity-emb[server,torch]")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--max-requests", type=int, default=2000)
    args = parser.parse_args()
    from embedops.models import resolve

    model_dir = str(resolve(args.model).path)
    servers = [("embedops torch fp32", model_dir, None)]
    if args.onnx_model:
        servers.append(("embedops onnx int8", args.onnx_model, None))
    if args.infinity:
        servers.append(("infinity torch", model_dir, args.infinity))
    rows = []
    for label, path, infinity in servers:
        baseline = {b: in_process(path, b, args.seconds) for b in (1, 8)}
        backend = label.split(" ", 1)[1]
        for b in (1, 8):
            encode, direct = baseline[b]
            rows.append((f"encode {backend}", 1, b, encode, [], 1.0, encode / direct))
            rows.append((f"engine {backend}", 1, b, direct, [], direct / encode, 1.0))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        if infinity:
            command = [
                infinity,
                "-m",
                "infinity_emb.cli",
                "v2",
                "--model-id",
                path,
                "--port",
                str(port),
                "--engine",
                "torch",
                "--device",
                "cpu",
                "--url-prefix",
                "",
            ]
            process, route, field = start(command, url, "/health"), "/embeddings", "input"
        else:
            command = [
                sys.executable,
                "-m",
                "embedops",
                "serve",
                "--model",
                path,
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--no-access-log",
            ]
            process, route, field = start(command, url, "/readyz"), "/embed", "inputs"
        try:
            for concurrency in (1, 16, 64):
                for batch in (1, 8):
                    rate, lat = asyncio.run(
                        load_test(url, route, field, concurrency, batch, args.seconds, args.max_requests)
                    )
                    encode, direct = baseline[batch]
                    vs_engine = None if infinity else rate / direct
                    rows.append((label, concurrency, batch, rate, lat, rate / encode, vs_engine))
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(
        f"{'system':<26}{'conc':>5}{'batch':>6}{'texts/s':>10}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}"
        f"{'x encode':>10}{'x engine':>10}"
    )
    for label, concurrency, batch, rate, lat, vs_encode, vs_engine in rows:
        p = [f"{np.percentile(lat, q) * 1000:8.1f}" if lat else f"{'-':>8}" for q in (50, 95, 99)]
        engine_ratio = f"{vs_engine:>10.2f}" if vs_engine is not None else f"{'-':>10}"
        print(f"{label:<26}{concurrency:>5}{batch:>6}{rate:>10.1f}{''.join(p)}{vs_encode:>10.2f}{engine_ratio}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
