"""The engine picks ONNX Runtime from the manifest of an int8 artifact made by `embedops quantize`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from embedops.models import load, resolve
from embedops.serve.engine import Engine


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
