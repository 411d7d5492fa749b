"""What one heavy or hostile client costs everyone else, against a real `embedops serve` on loopback.

    python bench/abuse_bench.py --model DIR [--seconds 10] [--max-queue 16] [--heavy-clients 2]

One run prints one table:
- small-request latency (one text, one client in sequence) alone, then beside `--heavy-clients`
  clients each sending maximum-size requests back to back (`--max-inputs` texts cut at the model's
  window: 256 x 256 tokens on all-MiniLM-L6-v2); goal: p99 beside them at most 3x p99 alone;
- overload: `--max-queue` clients (1x capacity) and then 4x as many, each sending 8 texts of 40
  words back to back and pausing 50 ms after a 429 (ignoring its Retry-After: the hostile case);
  goodput (texts/s answered 200) at 4x against 1x, goal >= 90 %, and the 429s' latency, goal p99 <
  50 ms; then 4x again with clients that wait the Retry-After they are given. The three windows run
  `--rounds` times in alternating order; figures are medians over rounds, ratios taken within a round;
  the CPU the load generator and the server used in each window is printed beside them;
- the server's RSS before and 2 s after `--memory-requests` (100) maximum-size requests, 4 at a
  time, goal: back within 20 % of before (each takes about 8 s of a 2-core CPU).
The load generator (aiohttp) shares the machine's cores with the server, so its CPU is in every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import numpy as np
from serve_bench import cpu_line, free_port, start, texts

SMALL = {"inputs": "what causes sea level rise"}
TIMEOUT_SECONDS = 120.0  # for one response, as the aiohttp sessions have


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field))) / 1024


def heavy_payload(inputs: int) -> dict[str, list[str]]:
    """`inputs` texts of ~300 words each: every one is cut at the model's window."""
    return {"inputs": [" ".join(texts(8, seed)) for seed in range(inputs)]}


async def small_latencies(session: aiohttp.ClientSession, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        began = time.perf_counter()
        async with session.post("/embed", json=SMALL) as response:
            assert response.status == 200, response.status
            await response.read()
        latencies.append(time.perf_counter() - began)
    return latencies


async def heavy_stream(session: aiohttp.ClientSession, payload: dict, stop: asyncio.Event, done: list[float]) -> None:
    while not stop.is_set():
        began = time.perf_counter()
        async with session.post("/embed", json=payload) as response:
            assert response.status == 200, response.status
            await response.read()
        done.append(time.perf_counter() - began)


async def fairness(url: str, args: argparse.Namespace) -> dict[str, float]:
    payload = heavy_payload(args.max_inputs)
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=600)) as session:
        alone = await small_latencies(session, args.seconds)
        stop, heavy = asyncio.Event(), []
        streams = [asyncio.create_task(heavy_stream(session, payload, stop, heavy)) for _ in range(args.heavy_clients)]
        await asyncio.sleep(1.0)  # the heavy requests are queued and running
        beside = await small_latencies(session, args.seconds)
        stop.set()
        await asyncio.gather(*streams)
    return {
        "alone_p50": _ms(alone, 50),
        "alone_p99": _ms(alone, 99),
        "beside_p50": _ms(beside, 50),
        "beside_p99": _ms(beside, 99),
        "heavy_s": float(np.median(heavy)),
        "heavy_n": len(heavy),
    }


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Window:
    """One overload window: goodput, the 429s' latencies, and the CPU seconds each side used."""

    goodput: float
    refused: list[float]
    generator_cpu: float
    server_cpu: float
    seconds: float


async def overload_window(url: str, pid: int, clients: int, seconds: float, *, polite: bool = False) -> Window:
    generator, server, began = time.process_time(), cpu_seconds(pid), time.perf_counter()
    goodput, refused = await overload(url, clients, seconds, polite=polite)
    elapsed = time.perf_counter() - began
    return Window(goodput, refused, time.process_time() - generator, cpu_seconds(pid) - server, elapsed)


class RawConnection:
    """One keep-alive HTTP/1.1 connection that posts prebuilt requests and reads the status, the
    Retry-After and the body. The overload windows send thousands of requests a second from the two
    cores the server runs on; through aiohttp the load generator took 18-21 % of a core in the 4x
    window, this way about a third of that, so the server keeps the CPU the goodput figures are about."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, request: bytes) -> tuple[int, float | None]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_SECONDS)
        headers = dict(line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:] if b":" in line)
        if b"content-length" not in headers:
            raise SystemExit(f"a response without content-length: {head[:200]!r}")
        await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), TIMEOUT_SECONDS)
        if headers.get(b"connection", b"").strip() == b"close":
            writer.close()
            self.streams = None
        retry_after = headers.get(b"retry-after")
        return int(head[9:12]), float(retry_after) if retry_after else None

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()


def post_request(netloc: str, payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    head = f"POST /embed HTTP/1.1\r\nhost: {netloc}\r\ncontent-type: application/json\r\n"
    return head.encode() + f"content-length: {len(body)}\r\n\r\n".encode() + body


async def overload(url: str, clients: int, seconds: float, *, polite: bool = False) -> tuple[float, list[float]]:
    """Texts/s answered 200 and the latencies of 429s, with `clients` sending 8 texts back to back and
    pausing 50 ms after a 429, or (`polite`) the Retry-After it names."""
    ok_texts, refused = 0, []
    address = urlsplit(url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    requests = [post_request(address.netloc, {"inputs": texts(8, i)}) for i in range(64)]
    deadline = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal ok_texts
        n = index
        connection = RawConnection(host, port)
        try:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                status, retry_after = await connection.post(requests[n % 64])
                if status == 200:
                    ok_texts += 8
                elif status == 429:
                    refused.append(time.perf_counter() - began)
                    if retry_after is None:
                        raise SystemExit("a 429 without Retry-After")
                    await asyncio.sleep(retry_after if polite else 0.05)
                else:
                    raise SystemExit(f"unexpected status {status}")
                n += clients
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return ok_texts / (time.perf_counter() - started), refused


async def memory(url: str, pid: int, inputs: int, count: int) -> tuple[float, float, float]:
    payload = heavy_payload(inputs)
    before = rss_mib(pid)
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=600)) as session:
        queue = list(range(count))

        async def sender() -> None:
            while queue:
                queue.pop()
                async with session.post("/embed", json=payload) as response:
                    assert response.status == 200, response.status
                    await response.read()

        await asyncio.gather(*(sender() for _ in range(4)))
    await asyncio.sleep(2.0)
    return before, rss_mib(pid), rss_mib(pid, "VmHWM")


def _ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="artifact to serve (an int8 ONNX artifact, say)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-queue", type=int, default=16, help="the server's --max-queue: its capacity")
    parser.add_argument("--max-inputs", type=int, default=256, help="the server's --max-inputs: a maximum request")
    parser.add_argument("--heavy-clients", type=int, default=2)
    parser.add_argument(
        "--memory-requests", type=int, default=100, help="maximum-size requests before RSS is read again"
    )
    parser.add_argument("--rounds", type=int, default=3, help="overload windows of each kind, in alternating order")
    parser.add_argument("--server-args", default="", help="more flags for `embedops serve`")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "embedops", "serve", "--model", args.model, "--port", str(port)]
    command += ["--host", "127.0.0.1", "--no-access-log", "--max-queue", str(args.max_queue)]
    command += ["--max-inputs", str(args.max_inputs), *args.server_args.split()]
    process, ready = start(command, url, "/readyz")
    try:
        # Memory first: "before" is the server as it starts, before any large request has run.
        before, after, peak = asyncio.run(memory(url, process.pid, args.max_inputs, args.memory_requests))
        fair = asyncio.run(fairness(url, args))
        kinds = {
            "1x": (args.max_queue, False),
            "4x": (4 * args.max_queue, False),
            "polite": (4 * args.max_queue, True),
        }
        windows: dict[str, list[Window]] = {kind: [] for kind in kinds}
        for round_ in range(args.rounds):
            for kind in list(kinds) if round_ % 2 == 0 else list(kinds)[::-1]:
                clients, polite = kinds[kind]
                window = overload_window(url, process.pid, clients, args.seconds, polite=polite)
                windows[kind].append(asyncio.run(window))
    finally:
        process.terminate()
        process.wait(timeout=60)

    print(f"# abuse_bench: {cpu_line()}")
    print(f"# model {args.model}; server ready in {ready:.1f} s; flags {' '.join(command[3:])}")
    print("| figure | value | goal | met |")
    print("|---|---:|---|---|")
    ratio = fair["beside_p99"] / fair["alone_p99"]
    goodput_1x, goodput_4x, goodput_polite = (float(np.median([w.goodput for w in windows[k]])) for k in kinds)
    hostile_ratio, polite_ratio = (_ratio_to_1x(windows[kind], windows["1x"]) for kind in ("4x", "polite"))
    refused = [latency for window in windows["4x"] for latency in window.refused]
    rows = [
        ("small request alone, p50 / p99 (ms)", f"{fair['alone_p50']:.1f} / {fair['alone_p99']:.1f}", "", ""),
        (
            f"small beside {args.heavy_clients} max-size streams, p50 / p99 (ms)",
            f"{fair['beside_p50']:.1f} / {fair['beside_p99']:.1f}",
            "",
            "",
        ),
        ("p99 beside / p99 alone", f"{ratio:.1f}x", "<= 3x", _met(ratio <= 3)),
        ("max-size request meanwhile, median (s)", f"{fair['heavy_s']:.2f} ({fair['heavy_n']} done)", "", ""),
        ("goodput 1x capacity (texts/s)", f"{goodput_1x:.0f}", "", ""),
        ("goodput 4x capacity (texts/s, ratio to 1x)", f"{goodput_4x:.0f} ({hostile_ratio:.0%})", ">= 90 %", ""),
        (
            "goodput 4x, clients that wait Retry-After (texts/s)",
            f"{goodput_polite:.0f} ({polite_ratio:.0%})",
            "",
            "",
        ),
        ("429 at 4x, p50 / p99 (ms)", f"{_ms(refused, 50):.1f} / {_ms(refused, 99):.1f}", "p99 < 50", ""),
        (
            f"RSS before / 2 s after {args.memory_requests} max-size requests (MiB)",
            f"{before:.0f} / {after:.0f}",
            "within 20 %",
            "",
        ),
        ("RSS peak (MiB)", f"{peak:.0f}", "", ""),
    ]
    rows[5] = (*rows[5][:3], _met(hostile_ratio >= 0.9))
    rows[7] = (*rows[7][:3], _met(bool(refused) and _ms(refused, 99) < 50))
    rows[8] = (*rows[8][:3], _met(after <= 1.2 * before))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"# 429s at 4x: {len(refused)} in {args.rounds} windows of {args.seconds:g} s")
    print("| window | round | goodput texts/s | ratio to 1x | 429s | load generator CPU | server CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, runs in windows.items():
        for round_, (window, one) in enumerate(zip(runs, windows["1x"], strict=True)):
            share = [f"{cpu / window.seconds:.0%} of a core" for cpu in (window.generator_cpu, window.server_cpu)]
            row = [kind, str(round_ + 1), f"{window.goodput:.0f}", f"{window.goodput / one.goodput:.0%}"]
            print("| " + " | ".join([*row, str(len(window.refused)), *share]) + " |")


def _ratio_to_1x(windows: list[Window], baseline: list[Window]) -> float:
    """Median over rounds of each window's goodput against the same round's 1x window."""
    return float(np.median([w.goodput / one.goodput for w, one in zip(windows, baseline, strict=True)]))


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


if __name__ == "__main__":
    main()
