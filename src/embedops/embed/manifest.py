"""`embed.json`: what an embedding output holds, and the plan that decides whether a rerun resumes it.

The plan is everything that changes a vector or where it lands: the model's content hash, the input's
content hash and every option. Its digest is stamped on each shard too, so a shard from another plan
is never taken for part of this one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embedops import __version__
from embedops.artifact import hash_files, sha256_file
from embedops.embed.sources import CorpusSource
from embedops.errors import ArtifactError
from embedops.files import write_text_atomically
from embedops.models import ModelRef

MANIFEST_NAME = "embed.json"
KIND = "embedops-embeddings"


def canonical_digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def model_fingerprint(ref: ModelRef) -> str:
    """A hash of the model's content: an artifact's manifest digest (which covers every file's sha256,
    verified when it loads), or the hash of every file of any other model directory."""
    if ref.source == "artifact" and ref.manifest.digest:
        return ref.manifest.digest
    return canonical_digest(hash_files(ref.path))


def input_fingerprint(source: CorpusSource) -> dict[str, Any]:
    files = source.files
    digests = {
        path.name if len(files) == 1 else path.relative_to(source.path).as_posix(): sha256_file(path) for path in files
    }
    return {
        "path": str(source.path.absolute()),
        "format": source.format,
        "bytes": sum(path.stat().st_size for path in files),
        "sha256": canonical_digest(digests) if len(files) > 1 else next(iter(digests.values())),
    }


def plan_digest(model: dict[str, Any], input: dict[str, Any], options: dict[str, Any]) -> str:
    """What decides every vector and where it lands: the contents of model and input, and the options."""
    return canonical_digest({"model": model["fingerprint"], "input": input["sha256"], "options": options})


@dataclass
class EmbedManifest:
    """The contents of `embed.json`; `shards` grows as shards are written, `complete` is set at the end."""

    model: dict[str, Any]
    input: dict[str, Any]
    options: dict[str, Any]
    count: int
    dim: int
    vector_dtype: str
    normalized: bool
    plan: str = ""
    shards: list[dict[str, Any]] = field(default_factory=list)
    int8_ranges: dict[str, list[float]] | None = None
    complete: bool = False
    seconds: float = 0.0
    created: str = ""
    kind: str = KIND
    embedops_version: str = __version__

    def __post_init__(self) -> None:
        self.plan = self.plan or plan_digest(self.model, self.input, self.options)

    @property
    def shard_count(self) -> int:
        size = int(self.options["shard_size"])
        return max(1, -(-self.count // size))

    def shard_rows(self, index: int) -> int:
        size = int(self.options["shard_size"])
        return min(size, self.count - index * size)

    def write(self, directory: Path) -> None:
        write_text_atomically(directory / MANIFEST_NAME, json.dumps(asdict(self), indent=2) + "\n")


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def read_embed_manifest(directory: Path) -> EmbedManifest | None:
    """The manifest in `directory`, None when there is none; a file that is not one is an error."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("kind") != KIND:
            raise ValueError(f"kind is {data.get('kind')!r}, not {KIND!r}")
        return EmbedManifest(**data)
    except (ValueError, TypeError, KeyError) as exc:
        raise ArtifactError(f"{path}: not an embedding manifest ({exc}); remove it or pass --force") from exc
