"""Exact nearest neighbours streamed over the Parquet vectors, in float64: the reference the index is
checked against. Distances are pgvector's own (cosine distance, negative inner product, Euclidean), so a
row the index returns can be compared with the exact k-th neighbour by value, and ties count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from embedops.index.embeddings import Shard

METRICS = ("cosine", "ip", "l2")


def distances(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """(queries x vectors) distances in float64, as pgvector defines them for `metric`."""
    q = np.asarray(queries, dtype=np.float64)
    v = np.asarray(vectors, dtype=np.float64)
    dots = q @ v.T
    if metric == "ip":
        return -dots
    if metric == "cosine":
        norms = np.linalg.norm(q, axis=1)[:, None] * np.linalg.norm(v, axis=1)[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(norms > 0, 1.0 - dots / norms, np.nan)
    if metric == "l2":
        squared = (q * q).sum(axis=1)[:, None] + (v * v).sum(axis=1)[None, :] - 2 * dots
        return np.sqrt(np.maximum(squared, 0.0))
    raise ValueError(f"unknown metric {metric!r}")


@dataclass
class ExactNeighbours:
    """The k nearest rows to each query, kept as shards stream past; a query's own row (`exclude`) is
    left out of its results, so corpus rows can serve as queries."""

    queries: np.ndarray
    exclude: list[str | None]
    k: int
    metric: str

    def __post_init__(self) -> None:
        count = len(self.queries)
        self.best = np.full((count, self.k), np.inf)
        self.best_ids = np.full((count, self.k), None, dtype=object)

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        if not ids:
            return
        block = distances(self.queries, vectors, self.metric)
        block[np.isnan(block)] = np.inf
        position = {ident: column for column, ident in enumerate(ids)}
        for row, own in enumerate(self.exclude):
            if own is not None and own in position:
                block[row, position[own]] = np.inf
        keep = min(self.k, block.shape[1])
        top = np.argpartition(block, keep - 1, axis=1)[:, :keep]
        merged = np.concatenate([self.best, np.take_along_axis(block, top, axis=1)], axis=1)
        merged_ids = np.concatenate([self.best_ids, np.asarray(ids, dtype=object)[top]], axis=1)
        order = np.argsort(merged, axis=1, kind="stable")[:, : self.k]
        self.best = np.take_along_axis(merged, order, axis=1)
        self.best_ids = np.take_along_axis(merged_ids, order, axis=1)

    def scan(self, shards: Iterable[Shard]) -> ExactNeighbours:
        for shard in shards:
            self.add(shard.ids, shard.vectors)
        return self

    def kth_distance(self, row: int) -> float:
        """The k-th exact distance of query `row` (or its last finite one when the corpus is smaller)."""
        finite = self.best[row][np.isfinite(self.best[row])]
        return float(finite[-1]) if len(finite) else np.inf

    def expected(self, row: int) -> int:
        """How many neighbours query `row` has (k, or fewer in a corpus smaller than k)."""
        return int(np.isfinite(self.best[row]).sum())


def recall(found: list[np.ndarray], exact: ExactNeighbours) -> np.ndarray:
    """Per-query recall: the share of the k exact neighbours the index returned, where a returned row at
    the k-th exact distance or closer counts (ties: any of the equally near rows is right).

    `found[i]` holds the float64 distances from query i to the rows the index returned for it,
    computed from those rows' stored vectors.
    """
    scores = np.ones(len(found))
    for row, returned in enumerate(found):
        wanted = exact.expected(row)
        if wanted == 0:
            continue
        limit = exact.kth_distance(row)
        tolerance = 1e-9 * max(1.0, abs(limit))
        scores[row] = min(wanted, int((np.asarray(returned) <= limit + tolerance).sum())) / wanted
    return scores
