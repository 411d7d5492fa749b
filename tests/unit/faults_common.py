"""What the fault tests share: the CLI as a subprocess, artifacts built from a model directory, hand edits
of their manifest, and a small pairs file."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from embedops.artifact import MANIFEST_NAME, ArtifactBuilder, Manifest, hash_files, write_manifest

EMBEDOPS = [sys.executable, "-m", "embedops"]


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def artifact_from(model_dir: Path, target: Path, **fields: object) -> Path:
    """A published artifact holding `model_dir`'s files, with manifest fields as given."""
    with ArtifactBuilder(target) as builder:
        shutil.copytree(model_dir, builder.path, dirs_exist_ok=True)
        return builder.publish(Manifest(kind="finetuned", base_model="tiny", **fields))  # type: ignore[arg-type]


def edit_manifest(path: Path, *, resign: bool = False, **changes: object) -> None:
    """Edit embedops.json by hand; `resign` also renews its digest, as someone who read our code might."""
    data = json.loads((path / MANIFEST_NAME).read_text())
    data.update(changes)
    if resign:
        manifest = Manifest.from_dict({k: v for k, v in data.items() if k != "digest"})
        write_manifest(path, manifest)
    else:
        (path / MANIFEST_NAME).write_text(json.dumps(data))


def rehash(path: Path) -> dict[str, str]:
    """The files_sha256 a manifest needs after files were changed on purpose."""
    return hash_files(path)


def write_pairs(path: Path, count: int) -> Path:
    path.write_text("".join(f"question number {i}\tanswer about topic {i}\n" for i in range(count)))
    return path
