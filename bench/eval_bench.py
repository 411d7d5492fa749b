"""Time `embedops eval` on a BEIR dataset against sentence-transformers' InformationRetrievalEvaluator.

Both runs load the same model from scratch and score the same queries over the same full corpus, so
the ratio is the cost (or saving) of going through embedops; the metric columns show they agree.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_bench.py                 # WikiQA test, bundled model
    HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_bench.py --split dev --model PATH
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikiqa"
METRICS = ("ndcg@10", "mrr@10", "recall@100", "map@100", "hit@1", "hit@10")


def run_embedops(model: str, data: Path, split: str, batch_size: int) -> tuple[float, dict[str, float]]:
    from embedops.evaluate import EvalConfig, evaluate

    started = time.perf_counter()
    result = evaluate(EvalConfig(models=[model], data=data, split=split, batch_size=batch_size))
    return time.perf_counter() - started, result.models[0].metrics


def run_sentence_transformers(model: str, data: Path, split: str, batch_size: int) -> tuple[float, dict[str, float]]:
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    from embedops.evaluate.datasets import read_beir_texts
    from embedops.models import load

    started = time.perf_counter()
    qrels: dict[str, set[str]] = {}
    for line in (data / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]:
        query_id, corpus_id, score = line.split("\t")
        if float(score) > 0:
            qrels.setdefault(query_id, set()).add(corpus_id)
    evaluator = InformationRetrievalEvaluator(
        read_beir_texts(data / "queries.jsonl"), read_beir_texts(data / "corpus.jsonl"), qrels,
        accuracy_at_k=[1, 10], precision_recall_at_k=[100], mrr_at_k=[10], ndcg_at_k=[10], map_at_k=[100],
        batch_size=batch_size, show_progress_bar=True, write_csv=False,
    )  # fmt: skip
    scores = evaluator(load(model))
    names = {"hit@1": "accuracy@1", "hit@10": "accuracy@10"}
    return time.perf_counter() - started, {m: scores[f"cosine_{names.get(m, m)}"] for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    runs = {
        "sentence-transformers IR evaluator (baseline)": run_sentence_transformers(
            args.model, args.data, args.split, args.batch_size
        ),
        "embedops eval": run_embedops(args.model, args.data, args.split, args.batch_size),
    }
    base_seconds = next(iter(runs.values()))[0]
    packages = ("embedops", "sentence-transformers", "torch", "transformers", "numpy")
    print(f"\n{args.model} on {args.data.name}/{args.split}, batch {args.batch_size}, {platform.processor() or 'cpu'}")
    print("versions: " + ", ".join(f"{p} {version(p)}" for p in packages) + f", python {platform.python_version()}")
    header = f"| run | seconds | ratio | {' | '.join(METRICS)} |"
    print(header + "\n|" + "---|" * (3 + len(METRICS)))
    for name, (seconds, metrics) in runs.items():
        values = " | ".join(f"{metrics[m]:.4f}" for m in METRICS)
        print(f"| {name} | {seconds:.1f} | {seconds / base_seconds:.2f}x | {values} |")


if __name__ == "__main__":
    main()
