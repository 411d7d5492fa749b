"""Does mining hard negatives help? Base vs plain fine-tune vs fine-tune on mined triplets, one run.

WikiQA (../shared/data/wikiqa): fine-tune the bundled all-MiniLM-L6-v2 on train-pairs.tsv as is, and
on the same pairs with negatives mined from corpus.jsonl by `embedops mine`; same epochs, batch size,
learning rate and seed. Test nDCG@10 / MRR@10 come from sentence-transformers'
InformationRetrievalEvaluator over the full corpus with qrels/test.tsv (dev with --split dev, for
tuning the recipe; test is never used to choose settings).

    python bench/mining_bench.py [--epochs 1] [--batch-size 32] [--num-negatives 1]
        [--range-min 10] [--range-max 100] [--relative-margin 0.05] [--sampling top] [--split test]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WIKIQA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikiqa"
METRICS = ("ndcg@10", "mrr@10")


def _jsonl(path: Path) -> dict[str, str]:
    records = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {record["_id"]: record["text"] for record in records}


def retrieval_evaluator(root: Path, split: str):
    """The split's queries against the whole corpus, as the BEIR layout defines relevance."""
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    relevant: dict[str, set[str]] = {}
    with open(root / "qrels" / f"{split}.tsv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if float(row["score"]) > 0:
                relevant.setdefault(row["query-id"], set()).add(row["corpus-id"])
    queries = {qid: text for qid, text in _jsonl(root / "queries.jsonl").items() if qid in relevant}
    return InformationRetrievalEvaluator(
        queries=queries,
        corpus=_jsonl(root / "corpus.jsonl"),
        relevant_docs=relevant,
        name=f"wikiqa-{split}",
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1],
        precision_recall_at_k=[10],
        map_at_k=[10],
        batch_size=64,
        show_progress_bar=True,
    )


def scores(evaluator, model_path: str) -> dict[str, float]:
    from embedops.models import load

    results = evaluator(load(model_path, device="cpu"))
    prefix = f"{evaluator.name}_cosine_"
    return {metric: results[prefix + metric] for metric in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--num-negatives", type=int, default=1)
    parser.add_argument("--range-min", type=int, default=10)
    parser.add_argument("--range-max", type=int, default=100)
    parser.add_argument("--relative-margin", type=float, default=0.05)
    parser.add_argument("--sampling", choices=("top", "random"), default="top")
    parser.add_argument("--split", choices=("dev", "test"), default="test")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not (WIKIQA / "corpus.jsonl").is_file():
        raise SystemExit(f"WikiQA not found at {WIKIQA}")

    import sentence_transformers
    import torch
    import transformers

    from embedops.data.mine import MineConfig, mine
    from embedops.models import DEFAULT_MODEL
    from embedops.train.config import FinetuneConfig
    from embedops.train.finetune import finetune

    evaluator = retrieval_evaluator(WIKIQA, args.split)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows["base"] = {**scores(evaluator, DEFAULT_MODEL), "train_s": 0.0, "rows": 0}

        started = time.perf_counter()
        mined = mine(
            MineConfig(
                data=WIKIQA / "train-pairs.tsv",
                output=work / "mined.jsonl",
                corpus=WIKIQA / "corpus.jsonl",
                num_negatives=args.num_negatives,
                range_min=args.range_min,
                range_max=args.range_max,
                relative_margin=args.relative_margin,
                sampling=args.sampling,
                device="cpu",
            )
        )
        mine_seconds = time.perf_counter() - started
        print(json.dumps(mined.to_dict(), indent=2))

        for name, data in (("plain", WIKIQA / "train-pairs.tsv"), ("mined", work / "mined.jsonl")):
            result = finetune(
                FinetuneConfig(
                    data=data,
                    output=work / name,
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    device="cpu",
                )
            )
            training = result.manifest.training
            rows[name] = {
                **scores(evaluator, str(work / name)),
                "train_s": training["seconds"],
                "rows": training["pairs"],
            }
        rows["mined"]["mine_s"] = round(mine_seconds, 1)

    recipe = (
        f"num_negatives={args.num_negatives} range={args.range_min}-{args.range_max} "
        f"relative_margin={args.relative_margin} sampling={args.sampling}"
    )
    print(
        f"\nWikiQA {args.split}: {len(evaluator.queries)} queries over {len(evaluator.corpus)} passages; "
        f"{args.epochs} epoch(s), batch {args.batch_size}, lr {args.lr}, seed 42, CPU ({os.cpu_count()} cores)\n"
        f"mining: {recipe}; {mined.triplets} triplets from {mined.pairs} pairs, "
        f"negatives per pair {mined.negatives_per_pair}, {mine_seconds:.0f} s\n"
        f"torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}, "
        f"transformers {transformers.__version__}\n"
    )
    print("| model | nDCG@10 | vs base | vs plain | MRR@10 | vs base | vs plain | train rows | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        cells = [name]
        for metric in METRICS:
            cells += [f"{row[metric]:.4f}", f"{row[metric] / rows['base'][metric]:.3f}x"]
            cells.append(f"{row[metric] / rows['plain'][metric]:.3f}x")
        cells += [str(row["rows"]), f"{row['train_s']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"recipe": recipe, "split": args.split, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
