"""Duplicate decisions over fingerprints (no texts): exact duplicates by hash, near duplicates by a
per-side similarity (MinHash or embeddings), and the groups of related rows that a split keeps together
(prep's eval split and the pipeline's held-out sides).

Rows are indices 0..n-1 of the rows that survived the previous step; each step returns, per row, the
index of the row it duplicates (-1: none), so the caller can report "duplicate of line N".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from embedops.data.minhash import candidate_pairs, estimated_jaccard
from embedops.data.neighbours import top_k_blocks

# Neighbours checked per text by the embedding method; more near copies than this of one text are
# still caught through the copies' own neighbours (the groups are connected components).
EMBEDDING_NEIGHBOURS = 16


class SideSimilarity(Protocol):
    """Similarity of one side (anchor or positive) of the rows: candidate pairs, then their scores."""

    def candidates(self) -> tuple[np.ndarray, np.ndarray]: ...

    def similarity(self, left: np.ndarray, right: np.ndarray) -> np.ndarray: ...


@dataclass
class MinHashSimilarity:
    signatures: np.ndarray

    def candidates(self) -> tuple[np.ndarray, np.ndarray]:
        return candidate_pairs(self.signatures)

    def similarity(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return estimated_jaccard(self.signatures, left, right)


@dataclass
class EmbeddingSimilarity:
    embeddings: np.ndarray  # L2-normalised
    threshold: float

    def candidates(self) -> tuple[np.ndarray, np.ndarray]:
        lefts, rights = [], []
        for block, indices, scores in top_k_blocks(self.embeddings, self.embeddings, EMBEDDING_NEIGHBOURS + 1):
            rows = np.arange(block.start, block.stop)[:, None].repeat(indices.shape[1], axis=1)
            close = (scores >= self.threshold) & (indices != rows)
            lefts.append(rows[close])
            rights.append(indices[close])
        left, right = np.concatenate(lefts), np.concatenate(rights)
        return np.minimum(left, right), np.maximum(left, right)

    def similarity(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", self.embeddings[left], self.embeddings[right])


def exact_duplicates(hashes: np.ndarray) -> np.ndarray:
    """For each row, the first earlier row with the same hash, or -1."""
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    original = first[inverse]
    return np.where(original != np.arange(len(hashes)), original, -1)


def _components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _first_of_component(labels: np.ndarray) -> np.ndarray:
    first = np.full(labels.max() + 1 if len(labels) else 0, len(labels), dtype=np.int64)
    np.minimum.at(first, labels, np.arange(len(labels)))
    return first[labels]


@dataclass
class NearDuplicates:
    duplicate_of: np.ndarray  # per row: the kept row it nearly duplicates, or -1
    related_left: np.ndarray  # pairs of rows with one near-identical side (either side >= threshold)
    related_right: np.ndarray


def near_duplicates(anchor: SideSimilarity, positive: SideSimilarity, n: int, threshold: float) -> NearDuplicates:
    """A pair is a near duplicate when both sides reach `threshold`; the earliest row of each group is kept."""
    a_left, a_right = anchor.candidates()
    p_left, p_right = positive.candidates()
    pairs = np.unique(np.stack([np.concatenate([a_left, p_left]), np.concatenate([a_right, p_right])]), axis=1)
    left, right = pairs[0].astype(np.int64), pairs[1].astype(np.int64)
    anchor_sim, positive_sim = anchor.similarity(left, right), positive.similarity(left, right)
    duplicate = np.minimum(anchor_sim, positive_sim) >= threshold
    first = _first_of_component(_components(n, left[duplicate], right[duplicate]))
    related = np.maximum(anchor_sim, positive_sim) >= threshold
    return NearDuplicates(
        duplicate_of=np.where(first != np.arange(n), first, -1),
        related_left=left[related],
        related_right=right[related],
    )


def related_groups(
    n: int, left: np.ndarray, right: np.ndarray, *side_hashes: np.ndarray, across_sides: bool = False
) -> np.ndarray:
    """Group label per row: rows sharing an identical side, or joined by a related pair, share a group.

    With `across_sides`, one row's anchor equal to another's positive joins them too (the pipeline's
    split keeps every shared text on one side); otherwise each side is compared with itself only.
    """
    keyspaces = [np.concatenate(side_hashes)] if across_sides and side_hashes else list(side_hashes)
    lefts, rights = [left], [right]
    for hashes in keyspaces:
        rows = np.arange(len(hashes)) % n
        _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        lefts.append(rows[first[inverse]])
        rights.append(rows)
    return _components(n, np.concatenate(lefts), np.concatenate(rights))


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: turns group keys into uniformly spread, seed-dependent sort keys."""
    z = values.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def group_split(labels: np.ndarray, keys: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean per row: in the eval split. Whole groups move together; which groups depends only on
    their content (the smallest row key in each) and the seed, not on file order."""
    if fraction <= 0 or len(labels) == 0:
        return np.zeros(len(labels), dtype=bool)
    group_keys = np.full(labels.max() + 1, np.iinfo(np.uint64).max, dtype=np.uint64)
    np.minimum.at(group_keys, labels, keys)
    with np.errstate(over="ignore"):
        order = np.argsort(_mix(group_keys ^ _mix(np.array([seed], dtype=np.uint64))), kind="stable")
    sizes = np.bincount(labels)[order]
    before = np.cumsum(sizes) - sizes
    chosen = order[before < round(fraction * len(labels))]
    return np.isin(labels, chosen)
