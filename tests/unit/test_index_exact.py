"""Exact search and recall for `embedops index` (no database): leave-one-out, ties, and the streaming merge."""

from __future__ import annotations

import numpy as np

from embedops.index.exact import ExactNeighbours, distances, recall
from embedops.index.verify import CorpusSample


def test_streamed_top_k_equals_a_full_sort_and_leaves_each_query_out() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 8)).astype(np.float32)
    ids = [f"d{i}" for i in range(500)]
    queries, own = vectors[[3, 250]], ["d3", "d250"]
    exact = ExactNeighbours(queries, list(own), 5, "l2")
    for start in range(0, 500, 64):  # shards of 64
        exact.add(ids[start : start + 64], vectors[start : start + 64])
    full = distances(queries, vectors, "l2")
    for row, me in enumerate((3, 250)):
        full[row, me] = np.inf
        assert exact.best_ids[row].tolist() == [ids[i] for i in np.argsort(full[row])[:5]]


def test_a_row_tied_with_the_kth_neighbour_counts_as_found() -> None:
    # Four rows at distance 1 from the query: any two of them are a correct top 2.
    vectors = np.array([[1, 0], [-1, 0], [0, 1], [0, -1], [5, 5]], dtype=np.float32)
    exact = ExactNeighbours(np.zeros((1, 2), dtype=np.float32), [None], 2, "l2")
    exact.add(["a", "b", "c", "d", "e"], vectors)
    returned = distances(np.zeros((1, 2)), vectors[[2, 3]], "l2")  # c and d, not a and b
    assert recall([returned[0]], exact).tolist() == [1.0]
    far = distances(np.zeros((1, 2)), vectors[[2, 4]], "l2")  # c is right, e is not
    assert recall([far[0]], exact).tolist() == [0.5]


def test_the_corpus_sample_picks_the_same_rows_from_any_sharding() -> None:
    from embedops.index.embeddings import Shard

    vectors = np.arange(300, dtype=np.float32).reshape(100, 3)
    ids = [str(i) for i in range(100)]
    picked = []
    for size in (7, 100):
        sample = CorpusSample(100, 10)
        for start in range(0, 100, size):
            sample.offer(Shard("x", ids[start : start + size], vectors[start : start + size]))
        picked.append(sample.queries().exclude)
    assert picked[0] == picked[1] and len(picked[0]) == 10
