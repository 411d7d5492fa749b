"""Rank metrics: hand-computed cases, tie handling, and term-for-term agreement with
sentence-transformers' InformationRetrievalEvaluator on the same rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedops.errors import ConfigError
from embedops.evaluate.metrics import pair_retrieval_metrics, ranking_metrics, relevant_positions


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_positions_of_relevant_documents_follow_the_ranking() -> None:
    query = np.array([[1.0, 0.0]])
    # Scores 1.0, 0.8, 0.6, 0.0 for documents 0..3 (angles chosen so the cosines are exact enough).
    documents = _unit(np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]]))
    positions = relevant_positions(query, documents, [np.array([2, 0])])
    assert positions.tolist() == [[0.0, 2.0]]


def test_hand_computed_metrics_for_two_relevant_documents_at_ranks_1_and_3() -> None:
    positions = np.array([[0.0, 2.0]])
    scores = ranking_metrics(positions, ["hit@1", "mrr@10", "recall@2", "precision@3", "map@10", "ndcg@10"])
    assert scores["hit@1"] == 1.0
    assert scores["mrr@10"] == 1.0
    assert scores["recall@2"] == 0.5
    assert scores["precision@3"] == pytest.approx(2 / 3)
    assert scores["map@10"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    ideal = 1 + 1 / math.log2(3)
    assert scores["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / ideal)


def test_ties_count_against_the_model() -> None:
    """A collapsed model (all vectors equal) must not look perfect."""
    same = np.ones((3, 4)) / 2.0
    scores = pair_retrieval_metrics(same, same)
    assert scores == {"mrr@10": pytest.approx(1 / 3), "hit@1": 0.0, "hit@10": 1.0}


def test_pair_retrieval_metrics_keeps_its_keys_and_ranks_among_positives_and_negatives() -> None:
    rng = np.random.default_rng(1)
    anchors = _unit(rng.normal(size=(5, 8)))
    assert pair_retrieval_metrics(anchors, anchors, k=5) == {"mrr@5": 1.0, "hit@1": 1.0, "hit@5": 1.0}
    # A negative identical to anchor 0 outranks (ties against) its positive.
    positives = _unit(anchors + 0.3 * rng.normal(size=anchors.shape))
    scores = pair_retrieval_metrics(anchors, positives, negatives=anchors[:1], k=10)
    assert scores["hit@1"] <= 0.8


def test_unknown_metric_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown rank metric"):
        ranking_metrics(np.zeros((1, 1)), ["ndgc@10"])


def test_matches_sentence_transformers_information_retrieval_evaluator() -> None:
    """Random embeddings, 1-4 relevant documents per query: every metric equal to ST's definition."""
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    rng = np.random.default_rng(7)
    queries, documents = _unit(rng.normal(size=(40, 16))), _unit(rng.normal(size=(300, 16)))
    relevant = [rng.choice(300, size=rng.integers(1, 5), replace=False) for _ in range(40)]
    ks = [1, 3, 10, 100]
    evaluator = InformationRetrievalEvaluator(
        queries={f"q{i}": "" for i in range(40)},
        corpus={f"d{j}": "" for j in range(300)},
        relevant_docs={f"q{i}": {f"d{j}" for j in rel} for i, rel in enumerate(relevant)},
        accuracy_at_k=ks, precision_recall_at_k=ks, mrr_at_k=ks, ndcg_at_k=ks, map_at_k=ks,
    )  # fmt: skip
    scores = queries @ documents.T
    ranked = [[{"corpus_id": f"d{j}", "score": float(row[j])} for j in np.argsort(-row)[: max(ks)]] for row in scores]
    expected = evaluator.compute_metrics(ranked)
    names = {"hit": "accuracy@k", "precision": "precision@k", "recall": "recall@k", "mrr": "mrr@k"}
    names |= {"ndcg": "ndcg@k", "map": "map@k"}
    ours = ranking_metrics(relevant_positions(queries, documents, relevant), [f"{f}@{k}" for f in names for k in ks])
    for family, st_name in names.items():
        for k in ks:
            assert ours[f"{family}@{k}"] == pytest.approx(float(expected[st_name][k]), abs=1e-12), (family, k)
