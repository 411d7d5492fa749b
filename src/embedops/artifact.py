"""The model-artifact contract: a SentenceTransformer directory plus one manifest, `embedops.json`.

Every stage writes its artifact into a staging directory beside the target and renames it into place
at the end (`ArtifactBuilder`), so a crash or a kill never leaves a half-written model at the target.
Loading verifies the recorded sha256 of every file, so a corrupted or edited model refuses to load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from embedops import __version__
from embedops.errors import ArtifactError, OutputExistsError

MANIFEST_NAME = "embedops.json"
MANIFEST_FORMAT = 1
KINDS = ("base", "finetuned", "merged", "quantized")
# Files that change after publication (the manifest itself, eval records) are not hashed.
_UNHASHED = {MANIFEST_NAME}


@dataclass
class Manifest:
    """What an artifact is and where it came from; mirrors `embedops.json`."""

    kind: str = "base"
    base_model: str | None = None
    parent: str | None = None
    backend: str = "torch"
    file: str | None = None
    dtype: str = "fp32"
    dim: int | None = None
    max_seq_length: int | None = None
    pooling: str | None = None
    normalize: bool = False
    license: str | None = None
    attribution: str | None = None
    adapter: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    eval: dict[str, Any] = field(default_factory=dict)
    files_sha256: dict[str, str] = field(default_factory=dict)
    created: str | None = None
    embedops: str = __version__
    format: int = MANIFEST_FORMAT

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return {"format": data.pop("format"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = MANIFEST_NAME) -> Manifest:
        if not isinstance(data, dict):
            raise ArtifactError(f"{source}: manifest must be a JSON object")
        if data.get("format") != MANIFEST_FORMAT:
            raise ArtifactError(
                f"{source}: manifest format {data.get('format')!r} is not supported "
                f"(this embedops reads format {MANIFEST_FORMAT})"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ArtifactError(f"{source}: unknown manifest keys {unknown}")
        manifest = cls(**data)
        if manifest.kind not in KINDS:
            raise ArtifactError(f"{source}: kind {manifest.kind!r} is not one of {', '.join(KINDS)}")
        return manifest


def read_manifest(directory: str | Path) -> Manifest | None:
    """The manifest of `directory`, or None for a plain SentenceTransformer directory."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc
    return Manifest.from_dict(data, source=str(path))


def write_text_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` through a temp file beside it and a rename: readers see the old file or
    the new one, never half of one, and a crash leaves the old file in place."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


def write_manifest(directory: str | Path, manifest: Manifest) -> None:
    """Replace the manifest atomically, e.g. to record evaluation results."""
    write_text_atomically(Path(directory) / MANIFEST_NAME, json.dumps(manifest.to_dict(), indent=2) + "\n")


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _artifact_files(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name not in _UNHASHED:
            yield path


def hash_files(directory: str | Path) -> dict[str, str]:
    root = Path(directory)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in _artifact_files(root)}


def verify_files(directory: str | Path, manifest: Manifest) -> None:
    """Refuse an artifact whose files differ from what its manifest recorded at publication."""
    root = Path(directory)
    for name, expected in manifest.files_sha256.items():
        path = root / name
        if not path.is_file():
            raise ArtifactError(f"{root}: file {name} listed in {MANIFEST_NAME} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                f"{root}: {name} does not match its recorded sha256 "
                f"(expected {expected[:12]}…, found {actual[:12]}…); the artifact was modified or "
                "corrupted: rebuild it or restore the file"
            )


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ArtifactBuilder:
    """Stage an artifact beside `target` and publish it by rename, or leave nothing at all.

    Use as a context manager: write files into `.path`, then call `publish(manifest)`. Leaving the
    block without publishing (an error, Ctrl-C) removes the staging directory. A staging directory
    left by a killed process is removed by the next builder for the same target.
    """

    def __init__(self, target: str | Path, *, force: bool = False) -> None:
        self.target = Path(target).absolute()
        self.force = force
        check_output_free(self.target, force=force)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_staging()
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.staging-{os.getpid()}-", dir=self.target.parent))
        self.published = False

    def _remove_stale_staging(self) -> None:
        for stale in self.target.parent.glob(f".{self.target.name}.staging-*"):
            pid = stale.name.rsplit(".staging-", 1)[1].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)

    def publish(self, manifest: Manifest) -> Path:
        """Hash the staged files, write the manifest, and rename the directory into place."""
        _apply_umask(self.path)
        manifest.files_sha256 = hash_files(self.path)
        manifest.created = manifest.created or utc_now()
        write_manifest(self.path, manifest)
        if self.target.exists():
            check_output_free(self.target, force=self.force)
            trash = self.target.with_name(f".{self.target.name}.replaced-{os.getpid()}")
            os.replace(self.target, trash)
            os.replace(self.path, self.target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.path, self.target)
        self.published = True
        return self.target

    def __enter__(self) -> ArtifactBuilder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.published:
            shutil.rmtree(self.path, ignore_errors=True)


def _apply_umask(directory: Path) -> None:
    """Give staged files the permissions a plain copy would have (mkdtemp and some savers use 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [directory, *directory.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def check_output_free(target: Path, *, force: bool) -> None:
    """Fail before any work when the output is taken, instead of after an hour of training."""
    if not target.exists():
        return
    if not force:
        raise OutputExistsError(f"output {target} already exists; choose another path or pass --force")
    if target.is_file() or (any(target.iterdir()) and not (target / MANIFEST_NAME).is_file()):
        raise OutputExistsError(
            f"output {target} exists and is not an embedops artifact; refusing to replace it even with --force"
        )


def summary(manifest: Manifest, path: str | Path) -> str:
    """A one-screen, human description of an artifact (what `embedops info` prints)."""
    lines = [f"{path}", f"  kind          {manifest.kind}"]

    def add(label: str, value: object) -> None:
        if value not in (None, "", {}):
            lines.append(f"  {label:<13} {value}")

    add("base model", manifest.base_model)
    add("parent", manifest.parent)
    add("license", manifest.license)
    add("attribution", manifest.attribution)
    add("backend", f"{manifest.backend}" + (f" ({manifest.file})" if manifest.file else ""))
    add("dtype", manifest.dtype)
    add("dimension", manifest.dim)
    add("max tokens", manifest.max_seq_length)
    add("pooling", manifest.pooling)
    add("normalized", "yes" if manifest.normalize else "no")
    if manifest.adapter:
        adapter = manifest.adapter
        add("adapter", f"{adapter.get('type', '?')} r={adapter.get('r')} alpha={adapter.get('alpha')}")
    if manifest.training:
        t = manifest.training
        add(
            "training",
            f"{t.get('pairs')} pairs, {t.get('epochs')} epochs, batch {t.get('batch_size')}, "
            f"lr {t.get('lr')}, loss {t.get('loss')}, {t.get('steps')} steps, {t.get('seconds')} s",
        )
        sanity = t.get("sanity_eval")
        if sanity:
            before, after = sanity.get("before", {}), sanity.get("after", {})
            add(
                "sanity eval",
                f"MRR@10 {before.get('mrr@10', 0):.4f} -> {after.get('mrr@10', 0):.4f}, "
                f"Hit@1 {before.get('hit@1', 0):.4f} -> {after.get('hit@1', 0):.4f} "
                f"on {sanity.get('pairs')} held-out pairs",
            )
    if manifest.quantization:
        add("quantization", json.dumps(manifest.quantization, sort_keys=True))
    for name, metrics in manifest.eval.items():
        scores = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        add("eval", f"{name}: {scores}")
    add("files", f"{len(manifest.files_sha256)} hashed")
    add("created", manifest.created)
    add("embedops", manifest.embedops)
    return "\n".join(lines)
