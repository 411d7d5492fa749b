"""Rank-based retrieval metrics over embeddings that are already L2-normalised.

Written by hand (numpy) rather than through sentence-transformers' `InformationRetrievalEvaluator`
because that evaluator encodes with a SentenceTransformer itself, and we rank embeddings from any
encoder (artifact, ONNX, live endpoint). The definitions are the evaluator's, term for term
(binary relevance; MAP@k divides by min(k, #relevant)); tests hold the two equal on real data.

Every metric depends only on where the relevant documents land in the ranking, so instead of sorting
each query's whole corpus we count, for each relevant document, the non-relevant ones scoring at
least as high. Ties thus count against the model: results do not depend on corpus order, and a
collapsed model (every vector alike) scores as badly as it is, not perfectly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from embedops.errors import ConfigError

RANK_FAMILIES = ("hit", "mrr", "ndcg", "recall", "precision", "map")
_RANK_METRIC = re.compile(r"^(" + "|".join(RANK_FAMILIES) + r")@([1-9][0-9]*)$")
# Scores are computed for this many (queries x documents) at a time, bounding memory on big corpora.
_SCORE_BLOCK = 1 << 24


def parse_rank_metric(name: str) -> tuple[str, int] | None:
    """`"ndcg@10"` -> ("ndcg", 10); None for a name that is not a rank metric."""
    match = _RANK_METRIC.match(name)
    return (match.group(1), int(match.group(2))) if match else None


def relevant_positions(queries: np.ndarray, documents: np.ndarray, relevant: Sequence[np.ndarray]) -> np.ndarray:
    """0-based rank of each query's relevant documents, ascending, padded with inf.

    `relevant[q]` holds the indices into `documents` that are relevant to query q (at least one).
    """
    width = max(len(r) for r in relevant)
    positions = np.full((len(queries), width), np.inf)
    step = max(1, _SCORE_BLOCK // max(1, len(documents)))
    for start in range(0, len(queries), step):
        scores = queries[start : start + step] @ documents.T
        for offset, row in enumerate(scores):
            q = start + offset
            own = np.sort(row[relevant[q]])[::-1]
            at_least = (row[None, :] >= own[:, None]).sum(axis=1)
            non_relevant = at_least - (own[None, :] >= own[:, None]).sum(axis=1)
            # The j-th best relevant document also sits below the j relevant ones before it.
            positions[q, : len(own)] = non_relevant + np.arange(len(own))
    return positions


def ranking_metrics(positions: np.ndarray, names: Iterable[str]) -> dict[str, float]:
    """Mean of each named rank metric (e.g. "ndcg@10", "map@100") over queries."""
    counts = np.isfinite(positions).sum(axis=1)
    out: dict[str, float] = {}
    for name in names:
        parsed = parse_rank_metric(name)
        if parsed is None:
            raise ConfigError(f"unknown rank metric {name!r}; expected one of {', '.join(RANK_FAMILIES)} @k")
        family, k = parsed
        out[name] = float(_per_query(family, k, positions, counts).mean())
    return out


def _per_query(family: str, k: int, positions: np.ndarray, counts: np.ndarray) -> np.ndarray:
    inside = positions < k
    found = inside.sum(axis=1)
    if family == "hit":
        return (found > 0).astype(float)
    if family == "recall":
        return found / counts
    if family == "precision":
        return found / k
    if family == "mrr":
        first = positions[:, 0]
        return np.where(first < k, 1.0 / (first + 1.0), 0.0)
    if family == "ndcg":
        dcg = np.where(inside, 1.0 / np.log2(positions + 2.0), 0.0).sum(axis=1)
        ideal = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))[np.minimum(counts, k) - 1]
        return dcg / ideal
    # map: precision at each relevant hit inside the cut-off, over min(k, #relevant).
    hits_so_far = np.arange(1, positions.shape[1] + 1)
    precision = np.where(inside, hits_so_far / (positions + 1.0), 0.0).sum(axis=1)
    return precision / np.minimum(counts, k)


def pair_retrieval_metrics(
    anchors: np.ndarray, positives: np.ndarray, negatives: np.ndarray | None = None, k: int = 10
) -> dict[str, float]:
    """Rank each anchor's own positive among all positives (and negatives) by cosine similarity.

    Anchor i's only relevant document is positives[i]; the others act as in-batch distractors,
    which is what a fine-tune on pairs should get better at.
    """
    documents = positives if negatives is None else np.concatenate([positives, negatives])
    relevant = [np.array([i]) for i in range(len(anchors))]
    positions = relevant_positions(anchors, documents, relevant)
    return ranking_metrics(positions, [f"mrr@{k}", "hit@1", f"hit@{k}"])
