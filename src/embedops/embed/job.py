"""Re-embed a corpus: plan, resume where a previous run stopped, embed shard by shard, record the result.

The same command after a kill continues at the first shard that is not on disk; shards are
deterministic given the plan, so the result equals an uninterrupted run. A changed model, input or
option is refused unless `force`, which starts over.
"""

from __future__ import annotations

import array
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from embedops.artifact import sha256_file, utc_now
from embedops.configs import FromFlags
from embedops.embed.encoder import EncodeOptions, PassageEncoder
from embedops.embed.manifest import (
    MANIFEST_NAME,
    EmbedManifest,
    input_fingerprint,
    model_fingerprint,
    plan_digest,
    read_embed_manifest,
    shard_name,
)
from embedops.embed.shards import shard_matches, write_shard
from embedops.embed.sources import CorpusSource, Passage, open_source
from embedops.errors import ConfigError, DataError, OutputExistsError
from embedops.files import temp_files
from embedops.models import DEFAULT_MODEL
from embedops.vectors import STORAGE_DTYPES, Int8Ranges, stored_width, to_storage

logger = logging.getLogger("embedops.embed")


@dataclass(frozen=True)
class EmbedConfig(FromFlags):
    """What `embed` was asked to do; `embedops embed` fills it with `from_flags`."""

    input: str
    output: str
    model: str = DEFAULT_MODEL
    format: str | None = None
    id_field: str | None = None
    text_field: str | None = None
    title_field: str | None = None
    dimensions: int | None = None
    normalize: bool = False
    dtype: str = "float32"
    batch_size: int = 32
    max_seq_length: int | None = None
    prompt_name: str | None = None
    shard_size: int = 10_000
    device: str | None = None
    force: bool = False
    engine: str = "local"  # or "ray"
    ray_address: str | None = None  # an existing cluster; None starts a local one
    concurrency: int | None = None  # Ray actors, each with its own model copy (default: CPUs / cpus_per_actor)
    num_gpus: float = 0.0  # per Ray actor
    cpus_per_actor: int = 1  # Ray CPUs per actor, and the batches its ONNX Runtime session runs at once

    def source(self) -> CorpusSource:
        return open_source(
            self.input,
            format=self.format,
            id_field=self.id_field,
            text_field=self.text_field,
            title_field=self.title_field,
        )

    @property
    def encode_options(self) -> EncodeOptions:
        return EncodeOptions(
            dimensions=self.dimensions,
            normalize=self.normalize,
            batch_size=self.batch_size,
            max_seq_length=self.max_seq_length,
            prompt_name=self.prompt_name,
        )

    def check(self) -> None:
        if self.dtype not in STORAGE_DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(STORAGE_DTYPES)}, not {self.dtype!r}")
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"--engine must be local or ray, not {self.engine!r}")
        for name in ("batch_size", "shard_size", "dimensions", "max_seq_length", "concurrency", "cpus_per_actor"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, not {value}")


@dataclass
class EmbedResult:
    output: str
    count: int
    shards: int
    resumed_shards: int
    dim: int
    vector_dtype: str
    normalized: bool
    model: str
    seconds: float  # this run, wall clock
    embedded: int  # passages this run embedded (the rest were resumed)
    texts_per_second: float  # embedded / the embedding phase's wall clock (read, embed, write; not the model load)
    truncated: int
    empty: int
    engine: str = "local"
    nodes: int = 1  # machines that embedded shards in this run
    already_complete: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Scan:
    count: int = 0
    empty: int = 0
    starts: list[int] = field(default_factory=list)  # line (Parquet: row) of each shard's first passage


def scan(source: CorpusSource, shard_size: int) -> Scan:
    """Read the whole input once before any work: a bad record or a repeated id fails now, not after
    hours of embedding. Ids are kept as 8-byte hashes (80 MB for ten million passages)."""
    seen = array.array("Q")
    result = Scan()
    for passage in source:
        if result.count % shard_size == 0:
            result.starts.append(passage.line)
        result.count += 1
        result.empty += passage.text == ""
        seen.append(_id_hash(passage.id))
    if result.count == 0:
        raise DataError(source.path, 1, "the corpus has no passages")
    hashes = np.frombuffer(seen, dtype=np.uint64)
    ordered = np.sort(hashes)
    repeats = ordered[1:][ordered[1:] == ordered[:-1]]
    for digest in np.unique(repeats):
        _raise_repeated_id(source, int(digest))
    return result


def _id_hash(ident: str) -> int:
    return int.from_bytes(hashlib.blake2b(ident.encode(), digest_size=8).digest(), "little")


def _raise_repeated_id(source: CorpusSource, digest: int) -> None:
    """Find the passages behind a repeated hash and fail on the first id that really repeats (two
    different ids sharing a hash, about one in 10^6 for ten million ids, are let through)."""
    lines: dict[str, list[int]] = {}
    for passage in source:
        if _id_hash(passage.id) == digest:
            lines.setdefault(passage.id, []).append(passage.line)
    for ident, where in lines.items():
        if len(where) > 1:
            shown = ", ".join(map(str, where[:5]))
            raise DataError(source.path, where[1], f"id {ident!r} appears more than once (lines {shown})")


def read_shard(source: CorpusSource, start: int, rows: int) -> list[Passage]:
    """The `rows` passages of one shard, read from its first line on."""
    return list(islice(source.read(start), rows))


Vectors = Iterator[tuple[int, list[str], np.ndarray]]  # shard index, ids, finished float32 vectors


@dataclass
class RunStats:
    """What the engines report back besides vectors."""

    truncated: int = 0  # passages longer than the window, cut
    nodes: set[str] = field(default_factory=set)  # Ray nodes that embedded shards


def _previous_run(output: Path, plan: dict[str, Any], *, force: bool) -> EmbedManifest | None:
    """The run recorded in `output` when it has this plan, to resume; None for a fresh start. A run of
    another plan, or a directory embedops did not write, is refused unless `force` (checked before any
    model is loaded)."""
    if output.is_file():
        raise OutputExistsError(f"{output} is a file; --output takes a directory")
    if force or not output.is_dir():
        return None
    previous = read_embed_manifest(output)
    if previous is None:
        if any(output.iterdir()):
            raise OutputExistsError(
                f"{output} exists and is not an embedding output; choose another path or pass --force"
            )
        return None
    if previous.plan == plan_digest(**plan):
        return previous
    changed = [part for part in ("model", "input", "options") if getattr(previous, part) != plan[part]]
    raise OutputExistsError(
        f"{output} holds embeddings of another {' and '.join(changed) or 'plan'}; "
        "choose another --output or pass --force to start over"
    )


def _clear_output(output: Path, *, keep_shards: bool = False) -> None:
    """Remove the temp files a killed run left, and unless `keep_shards` the shards and manifest too:
    only what embedops writes, nothing else in the directory."""
    output.mkdir(parents=True, exist_ok=True)
    ours = [] if keep_shards else [*output.glob("part-*.parquet"), output / MANIFEST_NAME]
    for stale in [*temp_files(output), *ours]:
        stale.unlink(missing_ok=True)


_PLAN_OPTIONS = ("dimensions", "normalize", "dtype", "batch_size", "max_seq_length", "prompt_name", "shard_size")


def run_embed(config: EmbedConfig) -> EmbedResult:
    """Embed every passage of `config.input` into Parquet shards under `config.output`."""
    from tqdm import tqdm

    from embedops.models import resolve
    from embedops.serve.engine import Engine
    from embedops.serve.lanes import batch_job_lanes

    config.check()
    started = time.perf_counter()
    source = config.source()
    ref = resolve(config.model)
    output = Path(config.output)
    options = {
        "format": source.format,
        "id_field": source.id_field,
        "text_field": source.text_field,
        "title_field": source.title_field,
        **{key: getattr(config, key) for key in _PLAN_OPTIONS},
    }
    model = {
        "name": ref.name,
        "fingerprint": model_fingerprint(ref),
        "backend": ref.manifest.backend,
        "dtype": ref.manifest.dtype,
    }
    plan: dict[str, Any] = {"model": model, "input": input_fingerprint(source), "options": options}
    previous = _previous_run(output, plan, force=config.force)
    found = scan(source, config.shard_size)
    logger.info("read %d passages from %s", found.count, source.path)
    # The driver loads the model too, on the Ray engine as well: options are checked against it
    # and the vector width measured before any shard is sent out.
    # The Ray driver only checks the options and measures the width: one session on default threads.
    lanes = batch_job_lanes() if config.engine == "local" else None
    engine = Engine(ref, device=config.device, lanes=lanes)
    encoder = PassageEncoder(engine, config.encode_options)
    _clear_output(output, keep_shards=previous is not None)
    manifest = previous or EmbedManifest(
        **plan,
        count=found.count,
        dim=stored_width(encoder.dim, config.dtype),
        vector_dtype=config.dtype,
        normalized=encoder.normalized,
        created=utc_now(),
    )
    recorded = {entry["file"]: entry["sha256"] for entry in manifest.shards}
    missing = [
        index
        for index in range(manifest.shard_count)
        if not _is_written(output / shard_name(index), manifest, index, recorded)
    ]
    resumed = manifest.shard_count - len(missing)
    if resumed:
        logger.info("resuming: %d of %d shards were already written", resumed, manifest.shard_count)
    stats = RunStats()
    embedded = sum(manifest.shard_rows(index) for index in missing)
    phase = time.perf_counter()
    with tqdm(total=manifest.count, desc="Embedding", unit="text", dynamic_ncols=True) as bar:
        bar.update(manifest.count - embedded)
        if config.engine == "ray":
            from embedops.embed.ray_engine import embed_on_ray

            shards = [(index, found.starts[index], manifest.shard_rows(index)) for index in missing]
            vectors = embed_on_ray(config, model["fingerprint"], shards, bar.update, stats)
        else:
            vectors = _embed_here(source, encoder, found.starts, missing, manifest, bar.update, stats)
        _store(vectors, output, manifest, started)
    seconds = time.perf_counter() - phase
    return EmbedResult(
        output=str(output),
        count=manifest.count,
        shards=manifest.shard_count,
        resumed_shards=resumed,
        dim=manifest.dim,
        vector_dtype=manifest.vector_dtype,
        normalized=manifest.normalized,
        model=manifest.model["name"],
        seconds=round(time.perf_counter() - started, 2),
        embedded=embedded,
        texts_per_second=round(embedded / seconds, 1) if embedded else 0.0,
        truncated=stats.truncated,
        empty=found.empty,
        engine=config.engine,
        nodes=len(stats.nodes) or 1,
        already_complete=not missing,
    )


def _embed_here(
    source: CorpusSource,
    encoder: PassageEncoder,
    starts: list[int],
    missing: list[int],
    manifest: EmbedManifest,
    progress: Callable[[int], object],
    stats: RunStats,
) -> Vectors:
    """One pass over the input from the first missing shard on: reading each shard from its own first
    line would skip all the lines before it again, shard after shard."""
    if not missing:
        return
    wanted = set(missing)
    records = source.read(starts[missing[0]])
    for index in range(missing[0], manifest.shard_count):
        block = list(islice(records, manifest.shard_rows(index)))
        if index not in wanted:
            continue
        before = encoder.truncated
        vectors = encoder.encode([passage.text for passage in block], progress)
        stats.truncated += encoder.truncated - before
        yield index, [passage.id for passage in block], vectors


def _store(vectors: Vectors, output: Path, manifest: EmbedManifest, started: float) -> None:
    """Write each shard as it arrives and record it in the manifest; mark the run complete at the end.

    int8 ranges come from shard 0 whichever engine runs, so every engine writes the same bytes.
    """
    earlier_seconds = manifest.seconds
    wrote = False
    for index, ids, block in vectors:
        path = output / shard_name(index)
        if manifest.vector_dtype == "int8" and manifest.int8_ranges is None:
            if index != 0:
                raise RuntimeError("int8 ranges must be taken from shard 0, which has to arrive first")
            taken = Int8Ranges.of(block)
            manifest.int8_ranges = {"low": taken.low, "high": taken.high}
            manifest.write(output)  # before the shard, so a resumed run quantizes with the same ranges
        ranges = Int8Ranges(**manifest.int8_ranges) if manifest.int8_ranges else None
        write_shard(path, ids, to_storage(block, manifest.vector_dtype, ranges), plan=manifest.plan, index=index)
        manifest.shards = [entry for entry in manifest.shards if entry["file"] != path.name]
        manifest.shards.append({"file": path.name, "rows": len(ids), "sha256": sha256_file(path)})
        manifest.seconds = earlier_seconds + time.perf_counter() - started
        manifest.write(output)
        wrote = True
    if wrote or not manifest.complete:
        manifest.shards.sort(key=lambda entry: entry["file"])
        manifest.complete = True
        manifest.seconds = earlier_seconds + time.perf_counter() - started
        manifest.write(output)


def _is_written(path: Path, manifest: EmbedManifest, index: int, recorded: dict[str, str]) -> bool:
    """Whether shard `index` is on disk whole and from this plan (a recorded one must match its hash)."""
    if not path.is_file():
        return False
    if path.name in recorded:
        return sha256_file(path) == recorded[path.name]
    return shard_matches(path, plan=manifest.plan, index=index, rows=manifest.shard_rows(index))
