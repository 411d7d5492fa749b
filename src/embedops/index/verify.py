"""The check before a swap: recall@k of the new table's HNSW index against exact search.

Queries are either a sample of corpus rows, each left out of its own results (taken while the shards
load, so the corpus is not read an extra time), or an `embed` output of real queries from the same model.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from embedops.errors import ConfigError
from embedops.index.embeddings import Embeddings, Shard
from embedops.index.exact import ExactNeighbours, distances, recall
from embedops.index.pgvector import PgvectorIndex

SAMPLE_SEED = 20


@dataclass
class QuerySet:
    """Query vectors; `exclude[i]` is the corpus id query i must not find (its own row), or None."""

    vectors: np.ndarray
    exclude: list[str | None]
    source: str  # "corpus" or the --queries directory

    def __len__(self) -> int:
        return len(self.exclude)


@dataclass
class CorpusSample:
    """A fixed random sample of corpus rows, picked out of the shards as they pass by."""

    count: int
    size: int
    positions: np.ndarray = field(init=False)
    _ids: list[str] = field(default_factory=list)
    _vectors: list[np.ndarray] = field(default_factory=list)
    _offset: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(SAMPLE_SEED)
        self.positions = np.sort(rng.choice(self.count, size=min(self.size, self.count), replace=False))

    def offer(self, shard: Shard) -> None:
        end = self._offset + len(shard.ids)
        lo, hi = np.searchsorted(self.positions, [self._offset, end])
        for position in self.positions[lo:hi] - self._offset:
            self._ids.append(shard.ids[position])
            self._vectors.append(shard.vectors[position])
        self._offset = end

    def queries(self) -> QuerySet:
        width = self._vectors[0].shape[0] if self._vectors else 0
        return QuerySet(np.array(self._vectors).reshape(len(self._ids), width), list(self._ids), "corpus")


def real_queries(queries: Embeddings, corpus: Embeddings, size: int) -> QuerySet:
    """An embed output of queries, refused unless it comes from the corpus's model with its width."""
    if queries.model_fingerprint != corpus.model_fingerprint:
        raise ConfigError(
            f"--queries {queries.path} was embedded with {queries.model_name} ({queries.model_fingerprint[:12]}), "
            f"the corpus with {corpus.model_name} ({corpus.model_fingerprint[:12]}): embed both with one model"
        )
    if queries.dim != corpus.dim:
        raise ConfigError(f"--queries {queries.path} has {queries.dim} dimensions, the corpus {corpus.dim}")
    sample = CorpusSample(queries.count, size)
    for shard in queries.shards():
        sample.offer(shard)
    found = sample.queries()
    return QuerySet(found.vectors, [None] * len(found), str(queries.path))


@dataclass
class RecallReport:
    k: int
    queries: int
    recall: float
    lowest: float
    ef_search: int
    index_ms: float  # mean wall time of one HNSW query, measured from here
    exact_ms: float  # mean time of exact search per query (streamed over the shards)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_recall(
    index: PgvectorIndex,
    relation: str,
    queries: QuerySet,
    corpus: Embeddings,
    *,
    k: int,
    metric: str,
    ef_search: int,
) -> RecallReport:
    """recall@k of `relation`'s HNSW index, forced, against exact float64 search over the verified shards."""
    started = time.perf_counter()
    exact = ExactNeighbours(queries.vectors, queries.exclude, k, metric).scan(corpus.shards())
    exact_seconds = time.perf_counter() - started
    index.use_index(ef_search)
    found = []
    started = time.perf_counter()
    for vector, own in zip(queries.vectors, queries.exclude, strict=True):
        ids, vectors = index.nearest(relation, vector, metric, k + (own is not None))
        keep = [row for row, ident in enumerate(ids) if ident != own][:k]
        found.append(distances(vector[None, :], vectors[keep], metric)[0] if keep else np.empty(0))
    index_seconds = time.perf_counter() - started
    scores = recall(found, exact)
    count = max(1, len(queries))
    return RecallReport(
        k=k,
        queries=len(queries),
        recall=float(scores.mean()) if len(scores) else 1.0,
        lowest=float(scores.min()) if len(scores) else 1.0,
        ef_search=ef_search,
        index_ms=1000 * index_seconds / count,
        exact_ms=1000 * exact_seconds / count,
    )
