"""The engine picks ONNX Runtime from the manifest of an int8 artifact made by `embedops quantize`."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from embedops.models import load, resolve
from embedops.serve.engine import Engine
from embedops.serve.lanes import CpuLanes


def test_onnx_artifact_is_served_by_onnxruntime(onnx_artifact: Path) -> None:
    engine = Engine(resolve(onnx_artifact), device="cpu")
    assert (engine.info.backend, engine.info.dtype, engine.info.dim) == ("onnx", "int8", 32)
    assert engine.info.forward == "onnxruntime+numpy"
    texts = ["hello world", "a longer sentence to pad the batch " * 3]
    served = engine.embed(engine.tokenize(texts, truncate=True))
    np.testing.assert_allclose(served, load(onnx_artifact, device="cpu").encode(texts), atol=1e-5)


def test_onnx_server_engine_never_imports_torch(onnx_artifact: Path) -> None:
    """Opened from its files, an ONNX artifact needs neither torch nor sentence-transformers to serve."""
    probe = (
        "import sys\n"
        "from embedops.models import resolve\n"
        "from embedops.serve.app import create_app\n"
        "from embedops.serve.engine import Engine\n"
        f"engine = Engine(resolve({str(onnx_artifact)!r}))\n"
        "engine.warmup()\n"
        "print(engine.info.forward, sorted({'torch', 'sentence_transformers', 'transformers'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[-2] == "onnxruntime+numpy []"


def test_lanes_of_several_threads_run_on_sessions_of_their_own(onnx_artifact: Path) -> None:
    """Two lanes of two threads: two sessions, each run on a free one, and a third call at once (the
    express lane) shares the first; every call gives the single-session vectors, and memory release
    runs on every copy."""
    from embedops.serve.onnx_forward import OnnxForward

    single = Engine(resolve(onnx_artifact), device="cpu")
    engine = Engine(resolve(onnx_artifact), device="cpu", lanes=CpuLanes(lanes=2, threads=2, cores=4, wide=False))
    forward = engine._forward
    assert isinstance(forward, OnnxForward) and len(forward.sessions) == 2 and forward.wide is None
    assert forward.sessions[0] is not forward.sessions[1]
    used: list[object] = []
    started, release = threading.Barrier(4), threading.Event()  # three calls and this thread

    class Recording:
        def __init__(self, session: object) -> None:
            self.inner = session

        def run(self, *args: object) -> object:
            used.append(self)
            started.wait(10)  # three calls inside run at once
            release.wait(10)
            return self.inner.run(*args)

        def get_inputs(self) -> object:
            return self.inner.get_inputs()

    forward.sessions = [Recording(session) for session in forward.sessions]
    forward.session = forward.sessions[0]
    while not forward._free.empty():
        forward._free.get()
    for session in forward.sessions:
        forward._free.put(session)
    ids = engine.tokenize(["hello world", "a longer sentence to pad the batch " * 3], truncate=True)
    with ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(engine.embed, ids) for _ in range(3)]
        started.wait(10)
        release.set()
        results = [call.result(10) for call in calls]
    assert sorted(map(id, used)) == sorted([id(forward.sessions[0])] * 2 + [id(forward.sessions[1])])
    for result in results:
        np.testing.assert_allclose(result, single.embed(ids), atol=1e-6)
    used.clear()
    started, release = threading.Barrier(1), threading.Event()
    release.set()
    engine.release_memory()
    assert used == forward.sessions


def test_a_batch_alone_runs_on_the_wide_session(onnx_artifact: Path) -> None:
    from embedops.serve.onnx_forward import OnnxForward

    engine = Engine(resolve(onnx_artifact), device="cpu", lanes=CpuLanes(lanes=2, threads=1, cores=2))
    forward = engine._forward
    assert isinstance(forward, OnnxForward) and forward.wide is not None
    ran: list[str] = []
    sessions = {"lane": forward.session, "wide": forward.wide}

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, *args: object) -> object:
            ran.append(self.name)
            return sessions[self.name].run(*args)

    forward.wide = Named("wide")
    forward._free.get()
    forward._free.put(Named("lane"))
    ids = engine.tokenize(["hello world"], truncate=True)
    np.testing.assert_allclose(engine.embed(ids, alone=True), engine.embed(ids), atol=1e-6)
    assert ran == ["wide", "lane"]


def test_padding_a_batch_to_a_multiple_of_four_tokens_leaves_its_vectors(onnx_artifact: Path) -> None:
    """On ARM the engine pads every batch to a multiple of 4 tokens (kernels.width_multiple); the extra
    positions are masked, so the vectors are those of the batch padded only to its longest input."""
    engine = Engine(resolve(onnx_artifact))
    engine.pad_multiple = 1
    batch = engine.tokenize(["a", "glaciers melt faster every decade", "sea levels rise"], truncate=True)
    assert max(map(len, batch)) % 4 != 0
    exact = engine.embed(batch)
    engine.pad_multiple = 4
    np.testing.assert_allclose(engine.embed(batch), exact, atol=1e-6)
    np.testing.assert_allclose(engine.embed(batch[:1]), exact[:1], atol=1e-6)
