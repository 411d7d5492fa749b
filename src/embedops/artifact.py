"""The model-artifact contract: a SentenceTransformer directory plus one manifest, `embedops.json`.

Every stage writes its artifact into a staging directory beside the target and renames it into place
at the end (`ArtifactBuilder`), so a crash or a kill never leaves a half-written model at the target.

Loading verifies the whole artifact (`artifact_problems`): the manifest's own digest, so no field can
be edited by hand; every listed file against its sha256; and that nothing outside the list is there
(an unlisted weight or code file is refused, as is a name that leaves the directory). embedops itself
rewrites the manifest only through `write_manifest`, which renews the digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from embedops import __version__
from embedops.errors import ArtifactError, OutputExistsError
from embedops.files import is_temp_of, write_text_atomically

MANIFEST_NAME = "embedops.json"
MANIFEST_FORMAT = 1
KINDS = ("base", "finetuned", "merged", "quantized")
BACKENDS = ("torch", "onnx")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
    # sha256 of every other field (see `content_digest`): set by `write_manifest`, checked on read.
    digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return {"format": data.pop("format"), **data}

    def content_digest(self) -> str:
        """The digest of everything but the digest itself, over a canonical JSON form."""
        content = {k: v for k, v in self.to_dict().items() if k != "digest"}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

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
        for name, value in data.items():
            _check_type(source, name, value, _FIELD_TYPES[name])
        manifest = cls(**data)
        if manifest.kind not in KINDS:
            raise ArtifactError(f"{source}: kind {manifest.kind!r} is not one of {', '.join(KINDS)}")
        if manifest.backend not in BACKENDS:
            raise ArtifactError(f"{source}: backend {manifest.backend!r} is not one of {', '.join(BACKENDS)}")
        for name in ("dim", "max_seq_length"):
            value = getattr(manifest, name)
            if value is not None and value <= 0:
                raise ArtifactError(f"{source}: {name} must be a positive integer, not {value}")
        bad_hash = next((k for k, v in manifest.files_sha256.items() if not _SHA256.match(v)), None)
        if bad_hash is not None:
            raise ArtifactError(f"{source}: files_sha256[{bad_hash!r}] is not a sha256 hex digest")
        return manifest


_FIELD_TYPES = typing.get_type_hints(Manifest)


def _check_type(source: str, name: str, value: Any, hint: Any) -> None:
    """Refuse a manifest value of the wrong JSON type (a list for a dict, "384" or 384.0 for an int)."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in allowed:
        origin = typing.get_origin(option) or option
        if option is type(None) and value is None:
            return
        if origin is Any or (isinstance(value, origin) and not (origin is int and isinstance(value, bool))):
            if origin is dict and typing.get_args(option)[1] is str:
                wrong = next((k for k, v in value.items() if not isinstance(v, str)), None)
                if wrong is not None:
                    raise ArtifactError(f"{source}: {name}[{wrong!r}] must be a string")
            return
    expected = " or ".join("null" if a is type(None) else (typing.get_origin(a) or a).__name__ for a in allowed)
    raise ArtifactError(f"{source}: {name} must be {expected}, not {type(value).__name__} {value!r:.60}")


def read_manifest(directory: str | Path, *, check_digest: bool = True) -> Manifest | None:
    """The manifest of `directory`, or None for a plain SentenceTransformer directory.

    A manifest whose digest does not match its content was edited outside embedops and is refused;
    `check_digest=False` reads it anyway, for `embedops info --verify` to say what differs.
    """
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc
    manifest = Manifest.from_dict(data, source=str(path))
    if check_digest and (problem := digest_problem(manifest)):
        raise ArtifactError(f"{path}: {problem}")
    return manifest


def digest_problem(manifest: Manifest) -> str | None:
    if manifest.digest is None:
        return "the manifest has no digest, so its content cannot be trusted; rebuild the artifact"
    if manifest.digest != manifest.content_digest():
        return (
            "the manifest was edited after publication (its digest does not match its content); "
            "restore the original embedops.json or rebuild the artifact"
        )
    return None


def write_manifest(directory: str | Path, manifest: Manifest) -> None:
    """Replace the manifest atomically with a renewed digest, e.g. to record evaluation results."""
    manifest.digest = manifest.content_digest()
    write_text_atomically(Path(directory) / MANIFEST_NAME, json.dumps(manifest.to_dict(), indent=2) + "\n")


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _is_manifest_file(name: str) -> bool:
    """The manifest, or a temp file of its atomic rewrite that a kill left behind."""
    return name == MANIFEST_NAME or is_temp_of(name, MANIFEST_NAME)


def _artifact_files(directory: Path) -> Iterator[Path]:
    """Every file below `directory` but the manifest; links are listed too, so they can be refused."""
    for path in sorted(directory.rglob("*")):
        if (path.is_file() or path.is_symlink()) and not (path.parent == directory and _is_manifest_file(path.name)):
            yield path


def hash_files(directory: str | Path) -> dict[str, str]:
    root = Path(directory)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in _artifact_files(root)}


def _unsafe_name(name: str) -> str | None:
    """Why a listed name cannot be a file inside the artifact, or None when it can."""
    parts = PurePosixPath(name).parts
    if not name or "\\" in name or PurePosixPath(name).is_absolute():
        return "is not a relative path"
    if any(part in ("..", ".") for part in parts) or PurePosixPath(*parts).as_posix() != name:
        return "is not a plain path inside the artifact"
    return None


def artifact_problems(directory: str | Path, manifest: Manifest) -> list[str]:
    """Everything that differs between the artifact's files and its manifest; empty when it is intact.

    Covers the manifest's digest, each listed file (name, presence, sha256), the file the backend loads,
    links, and files present but not listed, which a load could read without any check.
    """
    root = Path(directory)
    problems = [problem] if (problem := digest_problem(manifest)) else []
    for name, expected in manifest.files_sha256.items():
        path = root / name
        if reason := _unsafe_name(name):
            problems.append(f"{name!r} listed in {MANIFEST_NAME} {reason}")
        elif path.is_symlink():
            problems.append(f"{name} is a symbolic link; an artifact holds its files themselves")
        elif not path.is_file():
            problems.append(f"{name} listed in {MANIFEST_NAME} is missing")
        elif (actual := sha256_file(path)) != expected:
            problems.append(
                f"{name} does not match its recorded sha256 (expected {expected[:12]}…, found {actual[:12]}…)"
            )
    if manifest.file is not None and manifest.file not in manifest.files_sha256:
        problems.append(f"the model file {manifest.file!r} is not one of the files listed in {MANIFEST_NAME}")
    for path in _artifact_files(root):
        name = path.relative_to(root).as_posix()
        if name not in manifest.files_sha256:
            problems.append(f"{name} is not listed in {MANIFEST_NAME}; an unlisted file is never loaded")
    return problems


def verify_artifact(directory: str | Path, manifest: Manifest) -> None:
    """Refuse an artifact that differs in any way from what its manifest recorded at publication."""
    problems = artifact_problems(directory, manifest)
    if problems:
        more = f" (and {len(problems) - 1} more: embedops info --verify lists them)" if len(problems) > 1 else ""
        raise ArtifactError(
            f"{directory}: {problems[0]}{more}; the artifact was modified or corrupted: rebuild it or restore it"
        )


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


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
        links = [p.name for p in _artifact_files(self.path) if p.is_symlink()]
        if links:
            raise ArtifactError(f"cannot publish {self.target}: staged files {links} are links, not files")
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
