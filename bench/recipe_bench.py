"""Does the default recipe (learning rate probed, length decided by validation) match the best fixed one?

One row per run, appended to a JSON-lines file with its date, machine and versions, so rows that take
hours on a 2-core CPU can be spread over sessions; `--table` prints every row so far.

Rows (all start from the bundled all-MiniLM-L6-v2 and train on DATASET/train-pairs.tsv):
  default    `embedops pipeline --data train-pairs.tsv --eval-data DATASET` with no tuning flags
             (optionally --time-budget); the dev split validates, test is only reported; int8 too.
  seed       the seed's recipe: `embedops finetune --epochs 2 --batch-size 128 --lr 2e-5`.
  lr=X       plain sentence-transformers training (MultipleNegativesRankingLoss, batch 32, linear
             decay over --max-epochs) at rate X; dev and test are scored after the epochs in --at,
             read off one run (so "epoch 3" is epoch 3 of a 20-epoch schedule).
Every trained model is also scored on STS-B test (Spearman; base 82.03): the forgetting check.

    python bench/recipe_bench.py --dataset climate-fever --row default [--time-budget 60m]
    python bench/recipe_bench.py --dataset climate-fever --row default --from-run runs/cf   (a finished run)
    python bench/recipe_bench.py --dataset climate-fever --row lr=5e-5 --max-epochs 20 --at 1,3,10,20
    python bench/recipe_bench.py --table
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "recipe_results.jsonl"
METRIC = "ndcg@10"


def machine() -> dict[str, str]:
    """CPU model and the flags that decide int8 and fp32 speed, and the versions that decide results."""
    import sentence_transformers
    import torch
    import transformers

    info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")
    return {
        "cpu": fields.get("Model name", platform.processor()).strip(),
        "flags": " ".join(flag for flag in wanted if flag in flags) or "none of avx2/avx512/vnni/amx",
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence-transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
    }


def score_model(model: Any, task: Any, metric: str) -> float:
    from embedops.evaluate.scoring import score
    from embedops.train.selection import ModelEncoder

    return round(score(task, ModelEncoder(model), metrics=[metric], batch_size=32)[metric] * 100, 2)


def sts_spearman(model: Any) -> float:
    from embedops.evaluate.datasets import load_task

    return score_model(model, load_task(DATA / "stsb" / "sts-test.csv"), "spearman")


def default_row(dataset: Path, output: Path, time_budget: str | None) -> dict[str, Any]:
    from embedops.pipeline import PipelineConfig, run_pipeline

    started = time.perf_counter()
    run_pipeline(
        PipelineConfig(data=dataset / "train-pairs.tsv", output=output, eval_data=dataset, time_budget=time_budget)
    )
    return run_row(output, time.perf_counter() - started)


def run_row(output: Path, seconds: float | None = None) -> dict[str, Any]:
    """The default row read from a finished pipeline run directory (wall time: the sum of its stages')."""
    from embedops.models import load

    document = json.loads((output / "pipeline.json").read_text(encoding="utf-8"))
    stages = document["stages"]
    training = stages["finetune"]["result"]
    selection = training["selection"]
    test = {name: round(stages[name]["result"]["metrics"][METRIC] * 100, 2) for name in ("eval-base", "eval-finetuned")}
    if "eval-quantized" in stages:
        test["eval-quantized"] = round(stages["eval-quantized"]["result"]["metrics"][METRIC] * 100, 2)
    budget = document["config"].get("time_budget")
    return {
        "row": "default" + (f" --time-budget {budget}" if budget else ""),
        "test": test,
        "dev_curve": [round(point[selection["metric"]] * 100, 2) for point in selection["curve"]],
        "probe": selection.get("probe"),
        "chosen_lr": training["lr"],
        "best_epoch": selection["best_epoch"],
        "epochs_run": training["epochs_run"],
        "stopped_by": selection.get("stopped_by"),
        "mined": training.get("mined"),
        "validation_seconds": selection.get("validation_seconds"),
        "finetune_seconds": training["seconds"],
        "seconds": round(seconds if seconds is not None else sum(r["seconds"] for r in stages.values()), 1),
        "general": document.get("forgetting"),
        "stsb": sts_spearman(load(output / "finetuned", device="cpu")),
    }


def fixed_row(dataset: Path, lr: float, batch_size: int, epochs: int, at: list[int]) -> dict[str, Any]:
    """Plain sentence-transformers training; dev and test scored after the epochs in `at`."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses
    from sentence_transformers.training_args import BatchSamplers
    from transformers import TrainerCallback

    from embedops.data import PairReader
    from embedops.evaluate.datasets import load_task
    from embedops.models import DEFAULT_MODEL, load, resolve

    model = load(resolve(DEFAULT_MODEL), device="cpu")
    pairs = [(e.anchor, e.positive) for e in PairReader(dataset / "train-pairs.tsv")]
    train = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    dev, test = load_task(dataset, split="dev"), load_task(dataset, split="test")
    points: list[dict[str, Any]] = []
    trained = {"seconds": 0.0, "since": time.perf_counter()}

    class ScoreAt(TrainerCallback):
        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            epoch = round(state.epoch)
            trained["seconds"] += time.perf_counter() - trained["since"]
            if epoch in at:
                points.append(
                    {
                        "epoch": epoch,
                        "dev": score_model(model, dev, METRIC),
                        "test": score_model(model, test, METRIC),
                        "stsb": sts_spearman(model),
                        "train_seconds": round(trained["seconds"], 1),
                    }
                )
                print(f"lr {lr:g} epoch {epoch}: {points[-1]}", flush=True)
            trained["since"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            learning_rate=lr,
            warmup_ratio=0.1,
            seed=42,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
        )
        loss = losses.MultipleNegativesRankingLoss(model)
        SentenceTransformerTrainer(
            model=model, args=args, train_dataset=train, loss=loss, callbacks=[ScoreAt()]
        ).train()
    return {"row": f"lr={lr:g} batch {batch_size}", "epochs": epochs, "points": points}


def seed_row(dataset: Path) -> dict[str, Any]:
    return fixed_row(dataset, 2e-5, 128, 2, [2]) | {"row": "seed (2 epochs, batch 128, lr 2e-5)"}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"| date | dataset | row | test {METRIC} | dev {METRIC} | STS-B | minutes | notes |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        head = f"| {row['date'][:16]} | {row['dataset']} | {row['row']}"
        if "points" in row:
            for point in row["points"]:
                minutes = point["train_seconds"] / 60
                lines.append(
                    f"{head}, epoch {point['epoch']} | {point['test']:.2f} | {point['dev']:.2f} | "
                    f"{point['stsb']:.2f} | {minutes:.1f} | training time only |"
                )
            continue
        test, curve = row["test"], row["dev_curve"]
        notes = (
            f"base {test['eval-base']:.2f}; int8 {test.get('eval-quantized', float('nan')):.2f}; "
            f"lr {row['chosen_lr']:g} probed; best epoch {row['best_epoch']} of {row['epochs_run']:g}, "
            f"stopped by {row['stopped_by']}; "
            f"dev curve {' '.join(f'{value:.1f}' for value in curve)}"
        )
        lines.append(
            f"{head} | {test['eval-finetuned']:.2f} | {max(curve):.2f} | {row['stsb']:.2f} | "
            f"{row['seconds'] / 60:.1f} | {notes} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="climate-fever", choices=("climate-fever", "wikiqa"))
    parser.add_argument("--row", help="default, seed, or lr=X (e.g. lr=5e-5)")
    parser.add_argument("--time-budget", help="for the default row")
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--at", default="1,3,10,20", help="epochs scored in an lr=X row")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output-dir", help="keep the default row's run here (default: a temporary directory)")
    parser.add_argument("--from-run", help="record the default row from a finished `embedops pipeline` directory")
    parser.add_argument("--results", default=str(RESULTS), help="JSON-lines file the row is appended to")
    parser.add_argument("--table", action="store_true", help="print every recorded row as a markdown table")
    args = parser.parse_args()
    results = Path(args.results)
    if args.row:
        dataset = DATA / args.dataset
        if not dataset.is_dir():
            raise SystemExit(f"{args.dataset} not found at {dataset}")
        when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        with tempfile.TemporaryDirectory() as scratch:
            if args.row == "default" and args.from_run:
                row = run_row(Path(args.from_run))
            elif args.row == "default":
                row = default_row(dataset, Path(args.output_dir or scratch) / "run", args.time_budget)
            elif args.row == "seed":
                row = seed_row(dataset)
            elif args.row.startswith("lr="):
                at = [int(epoch) for epoch in args.at.split(",")]
                row = fixed_row(dataset, float(args.row[3:]), args.batch_size, args.max_epochs, at)
            else:
                raise SystemExit(f"unknown --row {args.row!r}: default, seed or lr=X")
        row = {"date": when, "dataset": args.dataset, "machine": machine()} | row
        with open(results, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row, indent=2))
    if args.table or not args.row:
        rows = (
            [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()] if results.is_file() else []
        )
        print(table(rows))


if __name__ == "__main__":
    main()
