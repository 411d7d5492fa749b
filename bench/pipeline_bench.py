"""Does the default pipeline beat the seed's fixed recipe? WikiQA test nDCG@10, one run.

Both fine-tune the bundled all-MiniLM-L6-v2 on ../shared/data/wikiqa/train-pairs.tsv:
  seed      `embedops finetune --epochs 2 --batch-size 128 --lr 2e-5` (the seed's recipe), then
            `embedops eval` on the test split over the whole corpus;
  pipeline  `embedops pipeline --data train-pairs.tsv --eval-data wikiqa` with no tuning flags: the
            recipe comes from the data, the best epoch is chosen on the dev split, test is only reported.

    python bench/pipeline_bench.py [--output-dir DIR] [--only seed|pipeline]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WIKIQA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikiqa"
METRICS = ("ndcg@10", "mrr@10", "recall@100", "hit@1")


def seed_recipe(output: Path) -> tuple[dict[str, float], float]:
    from embedops.evaluate import EvalConfig, evaluate
    from embedops.train.config import FinetuneConfig
    from embedops.train.finetune import finetune

    started = time.perf_counter()
    model = output / "seed-recipe"
    finetune(FinetuneConfig(WIKIQA / "train-pairs.tsv", model, epochs=2, batch_size=128, lr=2e-5, force=True))
    result = evaluate(EvalConfig(models=[str(model)], data=WIKIQA, split="test"))
    return result.models[0].metrics, time.perf_counter() - started


def default_pipeline(output: Path) -> tuple[dict[str, dict[str, float]], dict, float]:
    from embedops.pipeline import PipelineConfig, run_pipeline

    started = time.perf_counter()
    result = run_pipeline(PipelineConfig(data=WIKIQA / "train-pairs.tsv", output=output / "pipeline", eval_data=WIKIQA))
    stages = result.document["stages"]
    scores = {
        label: stages[stage]["result"]["metrics"]
        for label, stage in (("base", "eval-base"), ("pipeline", "eval-finetuned"), ("pipeline int8", "eval-quantized"))
    }
    return scores, result.document, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", help="keep the models here (default: a temporary directory)")
    parser.add_argument("--only", choices=("seed", "pipeline"))
    args = parser.parse_args()
    if not WIKIQA.is_dir():
        raise SystemExit(f"WikiQA not found at {WIKIQA}")
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(args.output_dir or scratch)
        rows: dict[str, dict[str, float]] = {}
        seconds: dict[str, float] = {}
        if args.only != "seed":
            scores, document, seconds["pipeline"] = default_pipeline(output)
            rows.update(scores)
            recipe, training = document["recipe"], document["stages"]["finetune"]["result"]
            print(f"\npipeline recipe: { ({k: v for k, v in recipe.items() if k != 'why'}) }")
            print(
                f"validation curve: {training['selection']['curve']} best epoch {training['selection']['best_epoch']}"
            )
        if args.only != "pipeline":
            rows["seed recipe"], seconds["seed"] = seed_recipe(output)

    base = rows.get("base")
    print("\n| model | " + " | ".join(METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for label, metrics in rows.items():
        cells = [
            f"{metrics[m] * 100:.2f}" + (f" ({(metrics[m] - base[m]) * 100:+.2f})" if base and label != "base" else "")
            for m in METRICS
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if "seed recipe" in rows and "pipeline" in rows:
        gain = (rows["pipeline"]["ndcg@10"] - rows["seed recipe"]["ndcg@10"]) * 100
        print(f"\npipeline vs seed recipe, test nDCG@10: {gain:+.2f} points")
    print("seconds: " + ", ".join(f"{name} {value:.0f}" for name, value in seconds.items()))


if __name__ == "__main__":
    main()
