"""Model references: bundled default, plain directories, hub ids through a real offline HF cache."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedops.cli import main
from embedops.errors import ModelNotFoundError
from embedops.models import DEFAULT_MODEL, infer_manifest, load, resolve


def test_bundled_default_resolves_and_is_verified() -> None:
    ref = resolve(DEFAULT_MODEL)
    assert ref.source == "bundled"
    assert ref.manifest.dim == 384 and ref.manifest.max_seq_length == 256
    assert ref.manifest.pooling == "mean" and ref.manifest.normalize is True
    assert ref.manifest.license == "apache-2.0"
    assert resolve("all-MiniLM-L6-v2").path == ref.path


def test_plain_directory_manifest_is_inferred(tiny_model_dir: Path) -> None:
    ref = resolve(tiny_model_dir)
    assert ref.source == "directory"
    assert (ref.manifest.dim, ref.manifest.pooling, ref.manifest.normalize) == (32, "mean", True)
    assert ref.manifest.max_seq_length == 64


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("./no/such/dir", "does not exist"),
        ("/abs/missing", "does not exist"),
        ("not a valid id!", "does not exist"),
    ],
)
def test_missing_references_say_so(reference: str, message: str) -> None:
    with pytest.raises(ModelNotFoundError, match=message):
        resolve(reference)


def test_directory_without_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not a model directory"):
        resolve(tmp_path)


def hf_cache_with(home: Path, repo_id: str, source: Path) -> None:
    """Lay `source` out as the Hugging Face hub cache does for `repo_id` (refs/main -> snapshot)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def run_offline(code: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_hub_id_loads_from_a_real_offline_cache(tmp_path: Path) -> None:
    bundled = resolve(DEFAULT_MODEL)
    hf_cache_with(tmp_path, "BAAI/bge-small-en-v1.5", bundled.path)
    code = (
        "from embedops.models import resolve, load\n"
        "ref = resolve('BAAI/bge-small-en-v1.5')\n"
        "print(ref.source, ref.manifest.dim, ref.manifest.base_model)\n"
        "import numpy; numpy.save('"
        + str(tmp_path / "hub.npy")
        + "', load(ref, device='cpu').encode(['hello world']))\n"
    )
    result = run_offline(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hub", "384", "BAAI/bge-small-en-v1.5"]
    expected = load(bundled, device="cpu").encode(["hello world"])
    np.testing.assert_allclose(np.load(tmp_path / "hub.npy"), expected, atol=1e-6)


def test_uncached_hub_id_offline_names_model_and_fix(tmp_path: Path) -> None:
    code = "import sys\nfrom embedops.cli import main\nsys.exit(main(['info', 'BAAI/bge-small-en-v1.5']))"
    result = run_offline(code, tmp_path)
    assert result.returncode == 2
    assert "model 'BAAI/bge-small-en-v1.5' not found" in result.stderr
    assert "HF_HUB_OFFLINE=1" in result.stderr and "huggingface-cli download" in result.stderr
    assert "Traceback" not in result.stderr


def test_info_on_missing_model_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "./missing-model"]) == 2
    assert "error: model directory './missing-model' does not exist" in capsys.readouterr().err


def test_license_read_from_model_card(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"hidden_size": 16}')
    (tmp_path / "README.md").write_text("---\nlanguage: en\nlicense: mit\n---\n# card\n")
    manifest = infer_manifest(tmp_path, base_model="x")
    assert manifest.license == "mit" and manifest.dim == 16
