"""The artifact contract: atomic publication, integrity verification, manifest round trip, `info`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedops.artifact import MANIFEST_NAME, ArtifactBuilder, Manifest, read_manifest, summary, write_manifest
from embedops.cli import main
from embedops.errors import ArtifactError, OutputExistsError
from embedops.models import resolve


def build(target: Path, *, force: bool = False, content: str = "weights") -> Path:
    with ArtifactBuilder(target, force=force) as builder:
        (builder.path / "model.bin").write_text(content)
        (builder.path / "sub").mkdir()
        (builder.path / "sub" / "config.json").write_text("{}")
        return builder.publish(Manifest(kind="finetuned", base_model="base", dim=8))


def test_publish_writes_manifest_with_hashes(tmp_path: Path) -> None:
    path = build(tmp_path / "model")
    manifest = read_manifest(path)
    assert manifest is not None
    assert set(manifest.files_sha256) == {"model.bin", "sub/config.json"}
    assert manifest.created and manifest.created.endswith("Z")
    assert json.loads((path / MANIFEST_NAME).read_text())["format"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_failure_inside_builder_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), ArtifactBuilder(tmp_path / "model") as builder:
        (builder.path / "half.bin").write_text("x")
        raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []


def test_stale_staging_of_a_dead_process_is_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".model.staging-999999999-abc"
    stale.mkdir()
    build(tmp_path / "model")
    assert not stale.exists()


def test_existing_output_needs_force(tmp_path: Path) -> None:
    build(tmp_path / "model", content="one")
    with pytest.raises(OutputExistsError, match="--force"):
        build(tmp_path / "model")
    build(tmp_path / "model", force=True, content="two")
    assert (tmp_path / "model" / "model.bin").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_force_never_replaces_a_non_artifact(tmp_path: Path) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("irreplaceable")
    with pytest.raises(OutputExistsError, match="not an embedops artifact"):
        build(tmp_path / "precious", force=True)


def test_tampered_file_refuses_to_load(tmp_path: Path) -> None:
    path = build(tmp_path / "model")
    (path / "model.bin").write_text("tampered")
    with pytest.raises(ArtifactError, match="does not match its recorded sha256"):
        resolve(path)
    (path / "model.bin").unlink()
    with pytest.raises(ArtifactError, match="is missing"):
        resolve(path)


def test_manifest_rejects_unknown_format_and_keys(tmp_path: Path) -> None:
    path = build(tmp_path / "model")
    data = json.loads((path / MANIFEST_NAME).read_text())
    (path / MANIFEST_NAME).write_text(json.dumps({**data, "format": 99}))
    with pytest.raises(ArtifactError, match="format 99 is not supported"):
        read_manifest(path)
    (path / MANIFEST_NAME).write_text(json.dumps({**data, "colour": "red"}))
    with pytest.raises(ArtifactError, match="unknown manifest keys"):
        read_manifest(path)
    (path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_manifest(path)


def test_recording_eval_keeps_the_artifact_valid(tmp_path: Path) -> None:
    path = build(tmp_path / "model")
    manifest = read_manifest(path)
    manifest.eval["wikiqa-test"] = {"ndcg@10": 0.61}
    write_manifest(path, manifest)
    assert resolve(path).manifest.eval == {"wikiqa-test": {"ndcg@10": 0.61}}


def test_info_prints_summary_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = build(tmp_path / "model")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "kind          finetuned" in out and "source        artifact" in out
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "finetuned"


def test_summary_shows_license_and_training() -> None:
    manifest = Manifest(
        kind="finetuned",
        base_model="org/base",
        license="apache-2.0",
        attribution="org/base, licensed apache-2.0",
        training={
            "pairs": 10,
            "epochs": 1,
            "batch_size": 2,
            "lr": 1e-4,
            "loss": "mnrl",
            "steps": 5,
            "seconds": 1.0,
        },
    )
    text = summary(manifest, "m")
    assert "license       apache-2.0" in text and "10 pairs, 1 epochs" in text
