"""Serving throughput and latency against the same backend's in-process encode, on loopback only.

    python bench/serve_bench.py [--model DIR] [--onnx-model DIR ...] [--infinity PYTHON] [--seconds 3] [--rounds 4]

For each server (ours on the given models; Infinity's torch engine when --infinity names a Python
that has `infinity-emb[server,torch]`), it sends requests of 1 and 8 texts of ~40 words at
concurrency 1, 16 and 64, each window bounded by --seconds and --max-requests, and prints texts/s,
p50/p95/p99 latency and two ratios, per batch size: to sentence-transformers' `encode` of the same
artifact in process (what a user would call without a server), and to the server's own engine called
directly in process (tokenize + forward: what HTTP and batching cost).
The machine is shared and its speed drifts by tens of percent within a minute, more than the
overheads being measured. So each round runs every baseline and every concurrency once, in windows
of --seconds, forwards in even rounds and backwards in odd ones (a steady drift then weighs on both
sides alike); a ratio is taken within each round and the table gives the median over rounds, with
the range of the `x encode` ratio beside it. texts/s is the median over rounds; latency percentiles
pool all rounds.
The load generator is aiohttp on the same cores as the server, so its CPU is part of every figure.
A second table gives each server's seconds from launch to ready and its peak RSS over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
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


CONCURRENCY = (1, 16, 64)


def texts(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, 40)) for _ in range(count)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def in_process_calls(model_dir: str, *, engine: bool) -> dict[str, Callable[[list[str]], object]]:
    """sentence-transformers' `encode` of the artifact and, for our servers, the serving engine called directly."""
    from embedops.models import load, resolve
    from embedops.serve.engine import Engine

    model = load(model_dir, device="cpu")
    calls: dict[str, Callable[[list[str]], object]] = {
        "encode": lambda chunk: model.encode(chunk, batch_size=len(chunk))
    }
    if engine:
        served = Engine(resolve(model_dir), device="cpu")
        served.warmup()
        calls["engine"] = lambda chunk: served.embed(served.tokenize(chunk, truncate=True))
    return calls


def _rate(embed: Callable[[list[str]], object], batch: int, seconds: float) -> float:
    embed(texts(8))
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        embed(texts(batch, done))
        done += batch
    return done / (time.perf_counter() - started)


def serve(path: str, infinity: str | None) -> tuple[str, tuple[subprocess.Popen[bytes], float], str, str]:
    """Start our server (or Infinity's, with its Python) on `path`: URL, (process, seconds to ready), route, field."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if infinity:
        command = [infinity, "-m", "infinity_emb.cli", "v2", "--model-id", path, "--port", str(port)]
        command += ["--engine", "torch", "--device", "cpu", "--url-prefix", ""]
        return url, start(command, url, "/health"), "/embeddings", "input"
    command = [sys.executable, "-m", "embedops", "serve", "--model", path, "--port", str(port)]
    command += ["--host", "127.0.0.1", "--no-access-log"]
    return url, start(command, url, "/readyz"), "/embed", "inputs"


def start(command: list[str], url: str, health: str) -> tuple[subprocess.Popen[bytes], float]:
    """Launch a server and wait until `health` answers 200: the process and its seconds to ready."""
    began = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    while time.perf_counter() - began < 300:
        try:
            if httpx.get(url + health).status_code == 200:
                return process, time.perf_counter() - began
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"server {' '.join(command)} did not start")


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024


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


def measure(
    calls: dict[str, Callable[[list[str]], object]], server: tuple[str, str, str], batch: int, args: argparse.Namespace
) -> tuple[dict[str | int, list[float]], dict[int, list[float]]]:
    """Every round's texts/s of each baseline (by name) and concurrency, and the pooled latencies."""
    url, route, field = server
    rates: dict[str | int, list[float]] = {name: [] for name in [*calls, *CONCURRENCY]}
    latencies: dict[int, list[float]] = {c: [] for c in CONCURRENCY}
    windows: list[str | int] = [*calls, *CONCURRENCY]
    for round_ in range(args.rounds):
        for window in windows if round_ % 2 == 0 else windows[::-1]:
            if isinstance(window, str):
                rates[window].append(_rate(calls[window], batch, args.seconds))
                continue
            rate, lat = asyncio.run(load_test(url, route, field, window, batch, args.seconds, args.max_requests))
            rates[window].append(rate)
            latencies[window] += lat
    return rates, latencies


def cpu_line() -> str:
    from embedops.quantize.kernels import cpu_class, cpu_flags, cpu_model

    flags = sorted(flag for flag in cpu_flags() if flag.startswith(("avx", "amx")) or "vnni" in flag)
    versions = ", ".join(
        f"{name} {version(name)}" for name in ("onnxruntime", "onnx", "torch", "sentence-transformers")
    )
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu_model()} ({platform.machine()}, "
        f"{os.cpu_count()} cores), class {cpu_class()}, flags {' '.join(flags)}; {versions}"
    )


def _ratio(rates: list[float], baseline: list[float] | None) -> list[float]:
    return [a / b for a, b in zip(rates, baseline, strict=True)] if baseline else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument(
        "--onnx-model", action="append", default=[], help="an int8 ONNX artifact to serve as well (repeatable)"
    )
    parser.add_argument("--skip-torch", action="store_true", help="leave out the torch fp32 server")
    parser.add_argument("--infinity", help="python of a virtualenv with infinity-emb[server,torch]")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one measuring window")
    parser.add_argument("--rounds", type=int, default=4, help="windows per figure; ratios are taken within a round")
    parser.add_argument("--max-requests", type=int, default=2000)
    args = parser.parse_args()
    from embedops.models import resolve

    print(cpu_line())
    model_dir = str(resolve(args.model).path)
    servers = [] if args.skip_torch else [("embedops torch fp32", model_dir, None)]
    for onnx_model in args.onnx_model:
        method = str((resolve(onnx_model).manifest.quantization or {}).get("method", "int8"))  # onnx-rowwise-int8, ...
        servers.append((f"embedops {method.removeprefix('onnx-')}", onnx_model, None))
    if args.infinity:
        servers.append(("infinity torch", model_dir, args.infinity))
    rows, footprint = [], []
    for label, path, infinity in servers:
        backend = label.split(" ", 1)[1]
        calls = in_process_calls(path, engine=not infinity)
        url, (process, ready), route, field = serve(path, infinity)
        baselines, served = [], []
        try:
            for batch in (1, 8):
                rates, latencies = measure(calls, (url, route, field), batch, args)
                encode, direct = rates["encode"], rates.get("engine")
                baselines.append((f"encode {backend}", 1, batch, encode, [], [1.0], _ratio(encode, direct)))
                if direct:
                    baselines.append((f"engine {backend}", 1, batch, direct, [], _ratio(direct, encode), [1.0]))
                for concurrency in CONCURRENCY:
                    rate = rates[concurrency]
                    ratios = _ratio(rate, encode), _ratio(rate, direct)
                    served.append((label, concurrency, batch, rate, latencies[concurrency], *ratios))
            footprint.append((label, ready, peak_rss_mib(process.pid)))
        finally:
            process.terminate()
            process.wait(timeout=60)
        rows += baselines + sorted(served, key=lambda row: (row[1], row[2]))
    print(
        f"{'system':<26}{'conc':>5}{'batch':>6}{'texts/s':>10}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}"
        f"{'x encode':>10}{'range':>12}{'x engine':>10}"
    )
    for label, concurrency, batch, rate, lat, vs_encode, vs_engine in rows:
        p = [f"{np.percentile(lat, q) * 1000:8.1f}" if lat else f"{'-':>8}" for q in (50, 95, 99)]
        spread = f"{min(vs_encode):.2f}-{max(vs_encode):.2f}"
        engine_ratio = f"{np.median(vs_engine):>10.2f}" if vs_engine else f"{'-':>10}"
        print(
            f"{label:<26}{concurrency:>5}{batch:>6}{np.median(rate):>10.1f}{''.join(p)}"
            f"{np.median(vs_encode):>10.2f}{spread:>12}{engine_ratio}"
        )
    print(f"\n{'server':<26}{'ready s':>10}{'peak RSS MiB':>14}")
    for label, ready, rss in footprint:
        print(f"{label:<26}{ready:>10.1f}{rss:>14.0f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
