"""Mining with the bundled model on real WikiQA: negatives come from the corpus, never a labelled answer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from embedops.data import read_examples
from embedops.data.mine import MineConfig, mine

pytestmark = pytest.mark.integration


def test_wikiqa_negatives_are_hard_but_never_a_labelled_answer(tmp_path: Path, shared_data: Path) -> None:
    wikiqa = shared_data / "wikiqa"
    pairs = wikiqa / "train-pairs.tsv"
    subset = tmp_path / "pairs.tsv"
    lines = pairs.read_text(encoding="utf-8").splitlines(keepends=True)
    questions = list(dict.fromkeys(line.split("\t")[0] for line in lines))[:50]
    # every answer of each chosen question: mining can only exclude the positives it is told about
    subset.write_text("".join(line for line in lines if line.split("\t")[0] in questions), encoding="utf-8")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join((wikiqa / "corpus.jsonl").read_text(encoding="utf-8").splitlines(True)[:600]))

    result = mine(MineConfig(data=subset, output=tmp_path / "mined.jsonl", corpus=corpus, num_negatives=2, range_min=0))

    texts = {r["_id"]: r["text"] for r in map(json.loads, (wikiqa / "corpus.jsonl").open(encoding="utf-8"))}
    queries = {r["_id"]: r["text"] for r in map(json.loads, (wikiqa / "queries.jsonl").open(encoding="utf-8"))}
    answers: dict[str, set[str]] = {}
    with open(wikiqa / "qrels" / "train.tsv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            answers.setdefault(queries[row["query-id"]], set()).add(texts[row["corpus-id"]])
    triplets = read_examples(tmp_path / "mined.jsonl")
    assert result.triplets == len(triplets) >= 100
    assert all(t.negative not in answers[t.anchor] for t in triplets)
    assert result.mean_negative_score < result.mean_positive_score
    assert result.negatives_per_pair.get(2, 0) >= 50
