"""Shared fixtures: a tiny real SentenceTransformer built from a config (fast unit tests), the
bundled real model, the real datasets in ../shared/data (skipped with a reason where absent), and a
real PostgreSQL with pgvector that the session starts and stops itself."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public datasets (WikiQA, STS-B, SICK) kept beside the project; skip where absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA


LaunchServer = Callable[[list[str], dict[str, str]], tuple[str, "subprocess.Popen[bytes]"]]


@pytest.fixture(scope="session")
def launch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchServer]:
    """Start a server command (it gets `--port` and a free port appended) on loopback and wait for /readyz.

    Returns its URL and process. The caller stops it when done; any still running when the session
    ends are killed then.
    """
    import httpx

    processes: list[subprocess.Popen[bytes]] = []

    def launch(command: list[str], env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        log = tmp_path_factory.mktemp("serve") / "server.log"
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "SERVE_HOST": "127.0.0.1", **env}
        process = subprocess.Popen([*command, "--port", str(port)], env=full_env, stderr=log.open("wb"))
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    return url, process
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        process.kill()
        pytest.fail(f"server did not become ready: {log.read_text()[-2000:]}")

    yield launch
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def build_tiny_model(root: Path, name: str, **config: float) -> Path:
    """A 2-layer, 32-dim BERT SentenceTransformer with random weights (seed 0) and the bundled tokenizer,
    saved at root/name; `config` overrides BertConfig fields (dropout, say)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from embedops.models import resolve

    hf_dir, st_dir = root / f"{name}-hf", root / name
    tokenizer = AutoTokenizer.from_pretrained(str(resolve("sentence-transformers/all-MiniLM-L6-v2").path))
    bert = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **config,
    )
    torch.manual_seed(0)
    BertModel(bert).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Normalize()], device="cpu")
    model.save(str(st_dir))
    return st_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model every unit test shares."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), "tiny-model")


@pytest.fixture(scope="session")
def onnx_artifact(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as an int8 ONNX artifact made by `embedops quantize` (what the pipeline ships)."""
    pytest.importorskip("onnxruntime")
    from embedops.quantize.config import QuantizeConfig
    from embedops.quantize.pipeline import quantize

    target = tmp_path_factory.mktemp("onnx") / "tiny-int8"
    quantize(QuantizeConfig(model_path=str(tiny_model_dir), output=str(target), dtype="int8", check_samples=8))
    return target


class PostgresServer:
    """A real PostgreSQL 16 with pgvector from the `pgserver` wheel, in a temp dir, on a Unix socket only.

    Started by hand from the wheel's binaries (its own launcher adds a system user when run as root);
    as root the server runs as `nobody`, since PostgreSQL refuses to run as root. `nobody` may not be
    able to reach the virtualenv (a checkout under a mode-700 directory, as `mktemp -d` makes), so as
    root the wheel's installation (34 MB) and the shared libraries its binaries find relative to
    themselves (`$ORIGIN/../../../pgserver.libs`) are copied into the server's own directory first.
    """

    def __init__(self, root: Path) -> None:
        import importlib.util
        import shutil
        import subprocess

        spec = importlib.util.find_spec("pgserver")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("pgserver is not installed (pip install -e '.[dev]')")
        package = Path(next(iter(spec.submodule_search_locations)))
        self.root = root
        self.data = root / "data"
        self.user = "nobody" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(root, self.user)
            for part in (f"{package.name}/pginstall", f"{package.name}.libs"):
                if (package.parent / part).is_dir():
                    shutil.copytree(package.parent / part, root / part, symlinks=True)
            package = root / package.name
        self.bin = package / "pginstall" / "bin"
        self._run = lambda *args: subprocess.run(
            [str(self.bin / args[0]), *map(str, args[1:])], check=True, capture_output=True, user=self.user
        )
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-h '' -k {root} -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        self._run("pg_ctl", "-D", self.data, "-w", "-o", options, "-l", root / "log", "start")
        self._databases = 0

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.root}"

    def create_database(self) -> str:
        """A fresh, empty database; its DSN."""
        import psycopg

        self._databases += 1
        name = f"test_{self._databases}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def stop(self) -> None:
        import shutil

        self._run("pg_ctl", "-D", self.data, "-w", "-m", "fast", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the session (under /tmp: a Unix socket path must stay short), stopped at the end."""
    import tempfile

    pytest.importorskip("psycopg")
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="embedops-pg-")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """A database of its own for each test, on the session's server."""
    return postgres_server.create_database()
