"""`embedops embed --engine ray` on a real Ray cluster of two nodes started here (`ray start --head`,
then `ray start --address`): the shards it writes are byte for byte the local engine's."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RAY = str(Path(sys.executable).parent / "ray")
EMBEDOPS = [sys.executable, "-m", "embedops"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head and a second node on this machine, one CPU each, so two actors land on two nodes."""
    address = f"127.0.0.1:{free_port()}"
    common = ["--num-cpus", "1", "--object-store-memory", str(200 << 20), "--disable-usage-stats"]
    head = [RAY, "start", "--head", "--port", address.split(":")[1], "--include-dashboard=false", *common]
    try:
        subprocess.run(head, check=True, capture_output=True, timeout=120)
        subprocess.run([RAY, "start", "--address", address, *common], check=True, capture_output=True, timeout=120)
        yield address
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


def test_ray_engine_on_two_nodes_writes_the_local_engines_bytes(
    cluster: str, onnx_artifact: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"_id": f"d{i}", "title": f"t{i % 7}", "text": f"passage {i} " * (1 + i % 9)}) + "\n"
            for i in range(1200)
        ),
        encoding="utf-8",
    )
    # The int8 ONNX artifact is what the pipeline ships, and actors load it without torch.
    common = ["--model", str(onnx_artifact), "--input", str(corpus), "--shard-size", "150", "--dtype", "int8", "--json"]
    local = subprocess.run(
        [*EMBEDOPS, "embed", *common, "--output", str(tmp_path / "local")], capture_output=True, text=True
    )
    assert local.returncode == 0, local.stderr
    ray_run = subprocess.run(
        [*EMBEDOPS, "embed", *common, "--output", str(tmp_path / "ray"), "--engine", "ray", "--ray-address", cluster],
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert ray_run.returncode == 0, ray_run.stderr[-3000:]
    summary = json.loads(ray_run.stdout)
    assert (summary["engine"], summary["nodes"], summary["count"], summary["shards"]) == ("ray", 2, 1200, 8)

    def recorded(name: str) -> tuple[str, list[tuple[str, str]], dict]:
        manifest = json.loads((tmp_path / name / "embed.json").read_text())
        return manifest["plan"], [(s["file"], s["sha256"]) for s in manifest["shards"]], manifest["int8_ranges"]

    assert recorded("ray") == recorded("local")
    assert json.loads((tmp_path / "ray" / "embed.json").read_text())["complete"] is True
