"""An `embed` output as the index reads it: finished, float vectors, every shard as embed.json recorded it.

Each shard is read into memory once and hashed from those bytes, so what is checked is exactly what is
loaded: a shard changed after `embed` wrote it is refused, never half-loaded.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedops.artifact import sha256_file
from embedops.embed.manifest import EmbedManifest, canonical_digest, read_embed_manifest
from embedops.errors import ArtifactError, ConfigError, MissingDependencyError

# pgvector's `vector` holds float32; float16 outputs widen to it exactly. int8 and binary need types
# (halfvec, bit with Hamming distance) that the pgvector this targets (0.6) does not index.
LOADABLE_DTYPES = ("float32", "float16")
HNSW_MAX_DIM = 2000  # pgvector's limit for an HNSW index on `vector`


@dataclass(frozen=True)
class Shard:
    """One shard's rows: ids and float32 vectors (a row per id)."""

    file: str
    ids: list[str]
    vectors: np.ndarray


@dataclass
class Embeddings:
    """An `embed` output directory and its manifest, checked as loadable."""

    path: Path
    manifest: EmbedManifest

    @classmethod
    def open(cls, path: str | Path, *, what: str = "--embeddings") -> Embeddings:
        directory = Path(path)
        if not directory.is_dir():
            raise ConfigError(f"{what} {directory}: not a directory")
        manifest = read_embed_manifest(directory)
        if manifest is None:
            raise ArtifactError(f"{directory} has no embed.json; {what} takes the --output of `embedops embed`")
        if not manifest.complete:
            raise ArtifactError(
                f"{directory} is unfinished ({len(manifest.shards)} of {manifest.shard_count} shards); "
                "run the same `embedops embed` command again to finish it"
            )
        if manifest.vector_dtype not in LOADABLE_DTYPES:
            raise ConfigError(
                f"{directory} holds {manifest.vector_dtype} vectors; pgvector's index takes float vectors: "
                "embed with --dtype float32 or float16"
            )
        if manifest.dim > HNSW_MAX_DIM:
            raise ConfigError(
                f"{directory} has {manifest.dim} dimensions; pgvector's HNSW index takes at most {HNSW_MAX_DIM} "
                "(embed with --dimensions)"
            )
        if sum(int(entry["rows"]) for entry in manifest.shards) != manifest.count:
            raise ArtifactError(f"{directory}/embed.json: its shards' rows do not add up to its count")
        embeddings = cls(directory, manifest)
        embeddings.verify()
        return embeddings

    def verify(self) -> None:
        """Every shard against embed.json before anything is loaded (loading checks each again, from the
        bytes it loads, in case a file changes in between)."""
        for entry in self.manifest.shards:
            path = self.path / entry["file"]
            if not path.is_file():
                raise ArtifactError(f"{path} is missing; run the same `embedops embed` command again to write it")
            if sha256_file(path) != entry["sha256"]:
                raise _changed(path)

    @property
    def count(self) -> int:
        return self.manifest.count

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def model_name(self) -> str:
        return str(self.manifest.model.get("name", ""))

    @property
    def model_fingerprint(self) -> str:
        return str(self.manifest.model.get("fingerprint", ""))

    @property
    def content(self) -> str:
        """What the loaded rows depend on: the plan and every shard's hash (the same output twice is equal)."""
        return canonical_digest({"plan": self.manifest.plan, "shards": self.manifest.shards})

    def shards(self) -> Iterator[Shard]:
        """Every shard in order, each verified against the sha256 embed.json recorded for it."""
        for entry in sorted(self.manifest.shards, key=lambda item: item["file"]):
            yield self._read(entry)

    def _read(self, entry: dict[str, Any]) -> Shard:
        pq = _parquet()
        path = self.path / entry["file"]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise _changed(path)
        table = pq.read_table(io.BytesIO(data))
        column = table.column("vector").combine_chunks()
        vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
        if len(column) != int(entry["rows"]) or vectors.shape[1] != self.dim:
            raise ArtifactError(f"{path}: {len(column)} x {vectors.shape[1]} vectors, embed.json says otherwise")
        return Shard(entry["file"], table.column("id").to_pylist(), vectors.astype(np.float32, copy=False))


def _changed(path: Path) -> ArtifactError:
    return ArtifactError(
        f"{path} changed after `embedops embed` wrote it (its sha256 differs from embed.json); "
        "run the same `embedops embed` command again to rewrite it"
    )


def _parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependencyError("pyarrow", "embed") from exc
    return pq
