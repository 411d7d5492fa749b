"""Code shipped with a model, as a hostile user would ship it: a module of the model's own, a hub
snapshot carrying one, an auto_map to custom classes, and the same check on the ONNX path; none of it runs
without --trust-remote-code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from faults_common import artifact_from, copy_model, edit_manifest, rehash, write_pairs

from embedops.cli import main
from embedops.errors import ArtifactError
from embedops.models import load, resolve


def crafted_model(tiny_model_dir: Path, target: Path, marker: Path) -> Path:
    """The tiny model with a module of its own: importing pwn.py writes `marker`."""
    path = copy_model(tiny_model_dir, target)
    (path / "pwn.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from sentence_transformers.models import Normalize as Pwn\n"
    )
    modules = json.loads((path / "modules.json").read_text())
    modules[-1]["type"] = "pwn.Pwn"
    (path / "modules.json").write_text(json.dumps(modules))
    return path


def test_a_module_of_the_models_own_is_refused_unless_trusted(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    marker = tmp_path / "marker"
    model = crafted_model(tiny_model_dir, tmp_path / "crafted", marker)
    with pytest.raises(ArtifactError, match=r"'pwn\.Pwn'.*--trust-remote-code"):
        resolve(model)
    for command in (
        ["eval", "--model", str(model), "--data", str(write_pairs(tmp_path / "pairs.tsv", 4))],
        ["quantize", "--model-path", str(model), "--output", str(tmp_path / "q")],
        ["serve", "--model", str(model), "--port", "1"],
    ):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "pwn.Pwn" in err and "--trust-remote-code" in err and "Traceback" not in err
    assert main(["info", str(model)]) == 0
    assert "loading it needs --trust-remote-code" in capsys.readouterr().out
    assert not marker.exists(), "no command may import the model's module without --trust-remote-code"
    assert "EMBEDOPS_TRUST_REMOTE_CODE" not in os.environ

    load(resolve(model, trust_remote_code=True), device="cpu")
    assert marker.read_text() == "ran", "--trust-remote-code loads the model's own module"


def test_a_hub_snapshot_with_its_own_module_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Hub snapshots are local directories too: the same check holds for a real offline HF cache."""
    from test_models import hf_cache_with, run_offline

    marker = tmp_path / "marker"
    hf_cache_with(tmp_path / "home", "someone/crafted", crafted_model(tiny_model_dir, tmp_path / "crafted", marker))
    quantize = ["quantize", "--model-path", "someone/crafted", "--output", str(tmp_path / "q")]
    code = (
        "from embedops.cli import main\n"
        f"raise SystemExit(main(['info', 'someone/crafted', '--json']) or main({quantize!r}))\n"
    )
    result = run_offline(code, tmp_path / "home")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "'pwn.Pwn'" in result.stderr and "--trust-remote-code" in result.stderr
    assert '"remote_code"' in result.stdout and not marker.exists()


def test_auto_map_to_custom_classes_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "auto-map")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling.Evil"}}))
    with pytest.raises(ArtifactError, match="auto_map"):
        resolve(model)
    assert resolve(model, trust_remote_code=True).trust_remote_code


def test_the_onnx_path_shares_the_module_check(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = artifact_from(tiny_model_dir, tmp_path / "onnx", backend="onnx", file="model.safetensors", dim=32)
    modules = json.loads((model / "modules.json").read_text())
    modules[-1]["type"] = "os.system"
    (model / "modules.json").write_text(json.dumps(modules))
    edit_manifest(model, resign=True, files_sha256=rehash(model))
    with pytest.raises(ArtifactError, match=r"'os\.system'"):
        resolve(model)
