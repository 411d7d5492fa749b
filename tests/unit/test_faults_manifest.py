"""Hand edits of an artifact's manifest: refused by its digest, and a renewed digest does not walk around
the file checks (unlisted, outside, traversing or linked files); `info --verify` lists every difference."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from faults_common import artifact_from, edit_manifest

from embedops.artifact import read_manifest
from embedops.cli import main
from embedops.errors import ArtifactError
from embedops.models import resolve


def test_hand_edits_of_the_manifest_are_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = artifact_from(tiny_model_dir, tmp_path / "model", dim=32, license="apache-2.0")
    edit_manifest(model, license="mit")
    with pytest.raises(ArtifactError, match="edited after publication"):
        resolve(model)
    edit_manifest(model, license="apache-2.0")
    resolve(model)  # the original content is accepted again
    edit_manifest(model, training={"epochs": 99})
    with pytest.raises(ArtifactError, match="edited after publication"):
        resolve(model)
    edit_manifest(model, training=None, digest=None)
    with pytest.raises(ArtifactError, match="has no digest"):
        resolve(model)


def test_renewing_the_digest_does_not_walk_around_the_file_checks(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = artifact_from(tiny_model_dir, tmp_path / "model", dim=32)
    files = read_manifest(model).files_sha256
    weights = "model.safetensors"

    deleted = {k: v for k, v in files.items() if k != weights}
    edit_manifest(model, resign=True, files_sha256=deleted)
    with pytest.raises(ArtifactError, match=f"{weights} is not listed"):
        resolve(model)

    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"not a graph")
    edit_manifest(model, resign=True, files_sha256=files, backend="onnx", file=str(outside))
    with pytest.raises(ArtifactError, match="is not one of the files listed"):
        resolve(model)

    traversal = {**files, "../../../etc/hostname": "0" * 64}
    edit_manifest(model, resign=True, files_sha256=traversal, backend="torch", file=None)
    with pytest.raises(ArtifactError, match="is not a plain path inside the artifact") as refused:
        resolve(model)
    assert "found" not in str(refused.value), "a name outside the artifact is never read or hashed"

    edit_manifest(model, resign=True, files_sha256={**files, "/etc/hostname": "0" * 64})
    with pytest.raises(ArtifactError, match="is not a relative path"):
        resolve(model)

    edit_manifest(model, resign=True, files_sha256=files)
    (model / "pwn.py").write_text("raise SystemExit")
    with pytest.raises(ArtifactError, match=r"pwn\.py is not listed"):
        resolve(model)
    (model / "pwn.py").unlink()
    os.symlink(tmp_path / "outside.onnx", model / "link.onnx")
    with pytest.raises(ArtifactError, match=r"link\.onnx is not listed"):
        resolve(model)


def test_files_sha256_as_a_list_is_one_line_and_exit_2(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    model = artifact_from(tiny_model_dir, tmp_path / "model", dim=32)
    edit_manifest(model, files_sha256=["model.safetensors"])
    assert main(["info", str(model)]) == 2
    assert "files_sha256 must be dict" in capsys.readouterr().err


def test_info_verify_lists_every_difference(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    model = artifact_from(tiny_model_dir, tmp_path / "model", dim=32)
    assert main(["info", str(model), "--verify"]) == 0
    assert ": ok (" in capsys.readouterr().out

    (model / "extra.bin").write_bytes(b"x")
    with open(model / "model.safetensors", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\xff")
    edit_manifest(model, license="edited")
    assert main(["info", str(model), "--verify", "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert len(problems) == 3
    assert any("edited after publication" in p for p in problems)
    assert any("model.safetensors does not match" in p for p in problems)
    assert any("extra.bin is not listed" in p for p in problems)
