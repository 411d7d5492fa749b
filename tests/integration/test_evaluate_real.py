"""Evaluation on the real datasets: published STS-B figure for the bundled model, and equality with
sentence-transformers' own evaluators on the same real inputs."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from embedops.cli import main
from embedops.evaluate import EvalConfig, evaluate
from embedops.evaluate.datasets import RetrievalTask, SimilarityTask, load_task, read_beir_texts

pytestmark = pytest.mark.integration
BUNDLED = "sentence-transformers/all-MiniLM-L6-v2"
# Distractor passages added to the relevant ones: the equivalence check ranks against real text
# without encoding all 11,406 passages twice.
DISTRACTORS = 400


def test_real_datasets_read_with_their_published_sizes(shared_data: Path) -> None:
    wikiqa = load_task(shared_data / "wikiqa", split="test")
    assert isinstance(wikiqa, RetrievalTask)
    assert (wikiqa.name, len(wikiqa.queries), len(wikiqa.documents)) == ("wikiqa-test", 243, 11406)
    assert sum(len(r) for r in wikiqa.relevant) == 293
    stsb = load_task(shared_data / "stsb" / "sts-test.csv")
    assert isinstance(stsb, SimilarityTask) and len(stsb.gold) == 1379
    sizes = {split: len(load_task(shared_data / "sick" / "SICK.txt", split=split).gold) for split in ("train", "dev")}
    assert sizes == {"train": 4439, "dev": 495}


def test_bundled_model_reproduces_the_published_stsb_spearman(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "sts.json"
    data = shared_data / "stsb" / "sts-test.csv"
    assert main(["eval", "--model", BUNDLED, "--data", str(data), "--json", str(out), "--batch-size", "64"]) == 0
    print(capsys.readouterr().out)
    spearman = json.loads(out.read_text())["models"][0]["metrics"]["spearman"]
    assert abs(spearman * 100 - 82.0) <= 1.0


def test_similarity_metrics_equal_sentence_transformers_evaluator(
    shared_data: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    # The first 400 real STS-B test pairs: same layout and reader, a fifth of the encoding time.
    data = tmp_path / "sts-test.csv"
    lines = (shared_data / "stsb" / "sts-test.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    data.write_text("".join(lines[:400]), encoding="utf-8")
    task = load_task(data)
    assert isinstance(task, SimilarityTask)
    ours = evaluate(EvalConfig(models=[str(tiny_model_dir)], data=data)).models[0].metrics
    evaluator = EmbeddingSimilarityEvaluator(task.first, task.second, task.gold.tolist(), write_csv=False)
    theirs = evaluator(SentenceTransformer(str(tiny_model_dir), device="cpu"))
    assert ours["spearman"] == pytest.approx(theirs["spearman_cosine"], abs=1e-4)
    assert ours["pearson"] == pytest.approx(theirs["pearson_cosine"], abs=1e-4)


def _wikiqa_subset(source: Path, target: Path) -> Path:
    """The real WikiQA test queries and qrels over their relevant passages plus sampled real distractors."""
    (target / "qrels").mkdir(parents=True)
    shutil.copy(source / "queries.jsonl", target / "queries.jsonl")
    shutil.copy(source / "qrels" / "test.tsv", target / "qrels" / "test.tsv")
    relevant = {line.split("\t")[1] for line in (source / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    lines = (source / "corpus.jsonl").read_text().splitlines()
    others = [line for line in lines if json.loads(line)["_id"] not in relevant]
    keep = {
        *(line for line in lines if json.loads(line)["_id"] in relevant),
        *random.Random(0).sample(others, DISTRACTORS),
    }
    (target / "corpus.jsonl").write_text("\n".join(line for line in lines if line in keep) + "\n")
    return target


def test_retrieval_metrics_equal_information_retrieval_evaluator(shared_data: Path, tmp_path: Path) -> None:
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    from embedops.models import load

    data = _wikiqa_subset(shared_data / "wikiqa", tmp_path / "wikiqa")
    result = evaluate(EvalConfig(models=[BUNDLED], data=data, ks=[1, 3, 5, 10]))
    ours = result.models[0].metrics
    assert result.size == {"queries": 243, "documents": len(read_beir_texts(data / "corpus.jsonl"))}
    qrels: dict[str, set[str]] = {}
    for line in (data / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id, corpus_id, _ = line.split("\t")
        qrels.setdefault(query_id, set()).add(corpus_id)
    evaluator = InformationRetrievalEvaluator(
        read_beir_texts(data / "queries.jsonl"), read_beir_texts(data / "corpus.jsonl"), qrels,
        accuracy_at_k=[1, 3, 5, 10], precision_recall_at_k=[100], mrr_at_k=[10], ndcg_at_k=[10], map_at_k=[100],
        write_csv=False,
    )  # fmt: skip
    theirs = evaluator(load(BUNDLED, device="cpu"))
    st_names = {"ndcg@10": "ndcg@10", "mrr@10": "mrr@10", "recall@100": "recall@100", "map@100": "map@100"}
    st_names |= {f"hit@{k}": f"accuracy@{k}" for k in (1, 3, 5, 10)}
    assert set(ours) == set(st_names)
    for metric, st_name in st_names.items():
        assert ours[metric] == pytest.approx(theirs[f"cosine_{st_name}"], abs=1e-4), metric
    assert ours["ndcg@10"] > 0.5  # a real model on real data, not a degenerate agreement at zero
