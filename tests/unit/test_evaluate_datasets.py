"""Reading evaluation data: layout detection, BEIR/STS/triples parsing, sampling, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedops.errors import DataError
from embedops.evaluate.datasets import RetrievalTask, SimilarityTask, detect_task, load_task

SICK_HEADER = "pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score\tSemEval_set\n"


def _beir(root: Path, qrels: str, split: str = "test") -> Path:
    root.mkdir()
    corpus = [{"_id": "d1", "title": "Paris", "text": "capital of france"}, {"_id": "d2", "text": "berlin"}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    queries = [{"_id": "q1", "text": "capital of france?"}, {"_id": "q2", "text": "no answer"}]
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (root / "qrels").mkdir()
    (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


def test_beir_directory_keeps_queries_with_relevant_documents_and_prepends_titles(tmp_path: Path) -> None:
    task = load_task(_beir(tmp_path / "mini", "q1\td1\t1\nq2\td2\t0\n"))
    assert isinstance(task, RetrievalTask)
    assert (task.name, task.kind, task.queries) == ("mini-test", "beir", ["capital of france?"])
    assert task.documents == ["Paris capital of france", "berlin"]
    assert [r.tolist() for r in task.relevant] == [[0]]


@pytest.mark.parametrize(
    ("qrels", "message"),
    [
        ("q9\td1\t1\n", "2: query id 'q9' is not in queries.jsonl"),
        ("q1\td1\t1\nq1\td7\t1\n", "3: corpus id 'd7' is not in corpus.jsonl"),
        ("", "no relevant"),
    ],
)
def test_bad_qrels_name_the_line(tmp_path: Path, qrels: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_task(_beir(tmp_path / "mini", qrels))


def test_missing_split_lists_the_splits_there_are(tmp_path: Path) -> None:
    root = _beir(tmp_path / "mini", "q1\td1\t1\n", split="dev")
    with pytest.raises(DataError, match="splits found: dev"):
        load_task(root, split="test")


def test_stsb_reads_seven_fields_with_quoting_off(tmp_path: Path) -> None:
    path = tmp_path / "sts-test.csv"
    path.write_text(
        'main\tMSRvid\t2012\t0001\t2.5\tA "quoted" girl.\tA girl.\textra\tfields\n'
        "main\tMSRvid\t2012\t0002\t4.0\tMen play.\tBoys play.\n"
    )
    task = load_task(path)
    assert isinstance(task, SimilarityTask)
    assert task.name == "sts-test"
    assert task.first == ['A "quoted" girl.', "Men play."]
    assert task.gold.tolist() == [2.5, 4.0]


def test_sick_split_maps_to_semeval_set(tmp_path: Path) -> None:
    path = tmp_path / "SICK.txt"
    path.write_text(
        SICK_HEADER + "1\ta\tb\tNEUTRAL\t4.5\tTRAIN\n2\tc\td\tNEUTRAL\t1.0\tTRIAL\n3\te\tf\tNEUTRAL\t2.0\tTRIAL\n"
    )
    task = load_task(path, split="dev")
    assert isinstance(task, SimilarityTask)
    assert (task.name, task.first, task.gold.tolist()) == ("sick-dev", ["c", "e"], [1.0, 2.0])
    with pytest.raises(DataError, match="no sentence pairs for split TEST"):
        load_task(path, split="test")


def test_sick_header_without_a_required_column_names_it_at_line_1(tmp_path: Path) -> None:
    path = tmp_path / "SICK.txt"
    path.write_text(SICK_HEADER.replace("relatedness_score", "score") + "1\ta\tb\tNEUTRAL\t4.5\tTRAIN\n")
    with pytest.raises(DataError, match=r"SICK\.txt:1: the SICK header has no relatedness_score column") as raised:
        load_task(path, task="sts")
    assert (raised.value.path, raised.value.line) == (str(path), 1)


def test_triples_share_repeated_texts_as_one_document(tmp_path: Path) -> None:
    path = tmp_path / "triples.tsv"
    path.write_text("q1\tp\tn1\nq2\tp\tn2\nq3\tn1\tp\n")
    task = load_task(path)
    assert isinstance(task, RetrievalTask)
    assert task.documents == ["p", "n1", "n2"]
    assert task.triplets is not None and task.triplets.tolist() == [[0, 1], [0, 2], [1, 0]]
    assert detect_task(path) == "triples"


def test_pairs_have_no_triplet_accuracy(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"text_a": "x", "text_b": "y"}\n{"text_a": "z", "text_b": "w"}\n')
    task = load_task(path)
    assert isinstance(task, RetrievalTask) and task.triplets is None


def test_max_queries_is_a_fixed_seed_sample_of_queries_only(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"question {i}\tanswer {i}\n" for i in range(50)))
    first, again = load_task(path, max_queries=10), load_task(path, max_queries=10)
    assert isinstance(first, RetrievalTask) and isinstance(again, RetrievalTask)
    assert first.queries == again.queries and len(first.queries) == 10
    assert len(first.documents) == 50 and first.name == "pairs-q10"
    for query, relevant in zip(first.queries, first.relevant, strict=True):
        assert first.documents[int(relevant[0])] == query.replace("question", "answer")
    assert load_task(path, max_queries=10, seed=1).queries != first.queries
    assert np.array_equal(load_task(path, max_queries=500).relevant[3], np.array([3]))


def test_missing_data_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_task(tmp_path / "absent.tsv")
