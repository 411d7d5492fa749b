"""`embedops serve --workers 2` as a real process tree on the tiny model: both workers serve, each
request is counted once in /metrics whichever worker answers the scrape, and the shared metrics
directory is removed at shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

REQUESTS = 24
MAX_REQUESTS = 400


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(value) for value in listed.split()]


def embed_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "embedops_requests_total" and labels == {"route": "/embed", "status": "200"}:
                return sample.value
    return 0.0


@pytest.mark.slow
def test_two_workers_share_the_load_and_one_metrics_view(tiny_model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "embedops", "serve", "--model", str(tiny_model_dir), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "2", "--no-access-log"]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        workers = [pid for pid in children(server.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(workers) == 2, [Path(f"/proc/{pid}/cmdline").read_text() for pid in children(server.pid)]

        # A new connection each time, so the kernel spreads them over workers. /readyz answers once one
        # worker is ready; the other may still be warming up, so send until both have answered (bounded).
        def writers() -> set[str]:
            return {path.stem.rsplit("_", 1)[-1] for path in tmp_path.glob("embedops-metrics-*/counter_*.db")}

        sent = 0
        while sent < REQUESTS or (writers() != {str(pid) for pid in workers} and sent < MAX_REQUESTS):
            response = httpx.post(f"{url}/embed", json={"inputs": [f"request number {sent}"]}, timeout=30)
            assert response.status_code == 200 and response.json()["dim"] == 32
            sent += 1
        assert writers() == {str(pid) for pid in workers}  # both workers answered requests
        scrapes = [httpx.get(f"{url}/metrics", timeout=10).text for _ in range(6)]
        assert [embed_count(text) for text in scrapes] == [sent] * 6
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert not list(tmp_path.glob("embedops-metrics-*")), "the metrics directory outlived the server"
