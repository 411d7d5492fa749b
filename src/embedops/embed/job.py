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
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from embedops.artifact import sha256_file, utc_now
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
from embedops.embed.vectors import STORAGE_DTYPES, Int8Ranges, stored_width, to_storage
from embedops.errors import ConfigError, DataError, OutputExistsError
from embedops.models import DEFAULT_MODEL

logger = logging.getLogger("embedops.embed")


@dataclass(frozen=True)
class EmbedConfig:
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

    def check(self) -> None:
        if self.dtype not in STORAGE_DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(STORAGE_DTYPES)}, not {self.dtype!r}")
        for name in ("batch_size", "shard_size", "dimensions", "max_seq_length"):
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
    texts_per_second: float  # of the model work in this run: tokenize, forward, finish
    truncated: int
    empty: int
    already_complete: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Scan:
    count: int = 0
    empty: int = 0


def scan(source: CorpusSource) -> _Scan:
    """Read the whole input once before any work: a bad record or a repeated id fails now, not after
    hours of embedding. Ids are kept as 8-byte hashes (80 MB for ten million passages)."""
    seen = array.array("Q")
    result = _Scan()
    for passage in source:
        result.count += 1
        result.empty += passage.text == ""
        seen.append(int.from_bytes(hashlib.blake2b(passage.id.encode(), digest_size=8).digest(), "little"))
    if result.count == 0:
        raise DataError(source.path, 1, "the corpus has no passages")
    hashes = np.frombuffer(seen, dtype=np.uint64)
    ordered = np.sort(hashes)
    repeats = ordered[1:][ordered[1:] == ordered[:-1]]
    if repeats.size:
        _raise_repeated_id(source, int(repeats[0]))
    return result


def _raise_repeated_id(source: CorpusSource, digest: int) -> None:
    lines = [
        passage
        for passage in source
        if int.from_bytes(hashlib.blake2b(passage.id.encode(), digest_size=8).digest(), "little") == digest
    ]
    where = ", ".join(str(p.line) for p in lines[:5])
    raise DataError(source.path, lines[1].line, f"id {lines[0].id!r} appears more than once (lines {where})")


def _shards(source: CorpusSource, size: int) -> Iterator[list[Passage]]:
    records = iter(source)
    while block := list(islice(records, size)):
        yield block


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
    for stale in [*output.glob(".*.tmp"), *ours]:
        stale.unlink(missing_ok=True)


_PLAN_OPTIONS = ("dimensions", "normalize", "dtype", "batch_size", "max_seq_length", "prompt_name", "shard_size")


def run_embed(config: EmbedConfig) -> EmbedResult:
    """Embed every passage of `config.input` into Parquet shards under `config.output`."""
    from embedops.models import resolve
    from embedops.serve.engine import Engine

    config.check()
    started = time.perf_counter()
    source = open_source(
        config.input,
        format=config.format,
        id_field=config.id_field,
        text_field=config.text_field,
        title_field=config.title_field,
    )
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
    plan = {"model": model, "input": input_fingerprint(source), "options": options}
    previous = _previous_run(output, plan, force=config.force)
    found = scan(source)
    logger.info("read %d passages from %s", found.count, source.path)
    engine = Engine(ref, device=config.device)
    info = engine.info
    if config.dimensions is not None and config.dimensions > info.dim:
        raise ConfigError(f"--dimensions must be at most the model's {info.dim}, not {config.dimensions}")
    if config.max_seq_length is not None and config.max_seq_length > info.max_seq_length:
        raise ConfigError(f"--max-seq-length must be at most the model's {info.max_seq_length}")
    prompt = ""
    if config.prompt_name is not None:
        if config.prompt_name not in engine.prompts:
            raise ConfigError(
                f"--prompt-name {config.prompt_name!r} is not one of the model's prompts {sorted(engine.prompts)}"
            )
        prompt = engine.prompts[config.prompt_name]
    _clear_output(output, keep_shards=previous is not None)
    manifest = previous
    if manifest is None:
        manifest = EmbedManifest(
            **plan,
            count=found.count,
            dim=stored_width(config.dimensions or info.dim, config.dtype),
            vector_dtype=config.dtype,
            normalized=bool(config.normalize or (info.model_normalizes and config.dimensions is None)),
            created=utc_now(),
        )

    embedder = _ShardEmbedder(engine, config, prompt)
    resumed = _write_shards(source, output, manifest, embedder, started)
    if resumed:
        logger.info("resumed: %d of %d shards were already written", resumed, manifest.shard_count)
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
        embedded=embedder.texts,
        texts_per_second=round(embedder.texts / embedder.seconds, 1) if embedder.seconds else 0.0,
        truncated=embedder.truncated,
        empty=found.empty,
        already_complete=resumed == manifest.shard_count,
    )


def _write_shards(
    source: CorpusSource, output: Path, manifest: EmbedManifest, embedder: _ShardEmbedder, started: float
) -> int:
    """Embed and write every shard not yet on disk, recording each in the manifest; returns how many
    shards an earlier run had written."""
    from tqdm import tqdm

    recorded = {entry["file"]: entry["sha256"] for entry in manifest.shards}
    earlier_seconds = manifest.seconds
    resumed = 0
    with tqdm(total=manifest.count, desc="Embedding", unit="text", dynamic_ncols=True) as bar:
        for index, block in enumerate(_shards(source, int(manifest.options["shard_size"]))):
            path = output / shard_name(index)
            if _is_written(path, manifest, index, recorded):
                resumed += 1
                bar.update(len(block))
                continue
            vectors = embedder.embed([passage.text for passage in block], bar)
            if manifest.vector_dtype == "int8" and manifest.int8_ranges is None:
                ranges = Int8Ranges.of(vectors)
                manifest.int8_ranges = {"low": ranges.low, "high": ranges.high}
                manifest.write(output)  # before the shard, so a resumed run quantizes with the same ranges
            ranges = Int8Ranges(**manifest.int8_ranges) if manifest.int8_ranges else None
            stored = to_storage(vectors, manifest.vector_dtype, ranges)
            write_shard(path, [p.id for p in block], stored, plan=manifest.plan, index=index)
            manifest.shards = [entry for entry in manifest.shards if entry["file"] != path.name]
            manifest.shards.append({"file": path.name, "rows": len(block), "sha256": sha256_file(path)})
            manifest.seconds = earlier_seconds + time.perf_counter() - started
            manifest.write(output)
    if resumed < manifest.shard_count or not manifest.complete:
        manifest.shards.sort(key=lambda entry: entry["file"])
        manifest.complete = True
        manifest.seconds = earlier_seconds + time.perf_counter() - started
        manifest.write(output)
    return resumed


def _is_written(path: Path, manifest: EmbedManifest, index: int, recorded: dict[str, str]) -> bool:
    """Whether shard `index` is on disk whole and from this plan (a recorded one must match its hash)."""
    if not path.is_file():
        return False
    if path.name in recorded:
        return sha256_file(path) == recorded[path.name]
    return shard_matches(path, plan=manifest.plan, index=index, rows=manifest.shard_rows(index))


# Most rows x width² in one batch. Attention memory grows with the square of the width: MiniLM int8 on
# ONNX Runtime peaked at 1,370 MiB for 32 inputs of 512 tokens, 639 MiB for 8 and 192 MiB for 32 of
# 128, at the same tokens/s, so long inputs go in small batches and short ones in full ones.
_ATTENTION_BUDGET = 32 * 128**2


def _batches(lengths: list[int], batch_size: int) -> Iterator[np.ndarray]:
    """Row indices in batches of similar length (so a batch pads little), under the attention budget."""
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < batch_size:
            if (end - start + 1) * lengths[order[end]] ** 2 > _ATTENTION_BUDGET:
                break
            end += 1
        yield order[start:end]
        start = end


class _ShardEmbedder:
    """One shard's texts → finished float32 vectors, in the server's steps (tokenize, window, embed,
    finish) so a vector equals what `/embed` returns for the same model and options."""

    def __init__(self, engine: Any, config: EmbedConfig, prompt: str) -> None:
        self.engine = engine
        self.config = config
        self.prompt = prompt
        self.truncated = 0
        self.texts = 0
        self.seconds = 0.0

    def embed(self, texts: list[str], bar: Any) -> np.ndarray:
        clock = time.perf_counter()
        engine, config = self.engine, self.config
        window = config.max_seq_length or engine.info.max_seq_length
        room = window - engine.tokenizer.specials
        content = engine.tokenizer.content_ids([self.prompt + text for text in texts] if self.prompt else texts)
        self.truncated += sum(len(ids) > room for ids in content)
        ids = [engine.with_special_tokens(c, truncate=True, window=window) for c in content]
        del content
        vectors = np.empty((len(ids), engine.info.dim), dtype=np.float32)
        for rows in _batches([len(row) for row in ids], config.batch_size):
            batch = engine.embed([ids[i] for i in rows])
            engine.check_output(batch, len(rows))
            vectors[rows] = batch
            bar.update(len(rows))
        finished = engine.finish(vectors, normalize=config.normalize, dimensions=config.dimensions)
        self.texts += len(texts)
        self.seconds += time.perf_counter() - clock
        return finished
