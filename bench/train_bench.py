"""CPU training throughput: `embedops finetune` against a plain sentence-transformers script, one run.

Both train the bundled all-MiniLM-L6-v2 with MultipleNegativesRankingLoss on the same WikiQA pairs,
same batch size and epochs. Prints pairs/s for the training loop and for the whole command
(validation, dataset streaming, saving the artifact), and the ratio against the plain script.

    python bench/train_bench.py [--pairs 512] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikiqa" / "train-pairs.tsv"


def plain_script(pairs: list[tuple[str, str]], batch_size: int, workdir: Path) -> tuple[float, float]:
    """What a user writes by hand with sentence-transformers: returns (train seconds, total seconds)."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )

    from embedops.models import resolve

    started = time.perf_counter()
    model = SentenceTransformer(str(resolve("sentence-transformers/all-MiniLM-L6-v2").path), device="cpu")
    dataset = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [b for _, b in pairs]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(workdir / "plain-ckpt"),
        num_train_epochs=1,
        per_device_train_batch_size=batch_size,
        learning_rate=2e-5,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=42,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=losses.MultipleNegativesRankingLoss(model)
    )
    train_started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - train_started
    model.save(str(workdir / "plain-model"))
    return train_seconds, time.perf_counter() - started


def embedops_finetune(data: Path, batch_size: int, workdir: Path) -> tuple[float, float]:
    from embedops.train.config import FinetuneConfig
    from embedops.train.finetune import finetune

    started = time.perf_counter()
    result = finetune(
        FinetuneConfig(data=data, output=workdir / "embedops-model", batch_size=batch_size, lr=2e-5, device="cpu")
    )
    return result.manifest.training["seconds"], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if not DATA.is_file():
        raise SystemExit(f"WikiQA pairs not found at {DATA}")

    import sentence_transformers
    import torch
    import transformers

    lines = DATA.read_text(encoding="utf-8").splitlines()[: args.pairs]
    pairs = [tuple(line.split("\t")) for line in lines]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        subset = workdir / "pairs.tsv"
        subset.write_text("\n".join(lines) + "\n", encoding="utf-8")
        rows = {
            "plain sentence-transformers script": plain_script(pairs, args.batch_size, workdir),
            "embedops finetune": embedops_finetune(subset, args.batch_size, workdir),
        }
    base_train, base_total = rows["plain sentence-transformers script"]
    print(
        f"\n{len(pairs)} WikiQA pairs, batch {args.batch_size}, 1 epoch, all-MiniLM-L6-v2, CPU "
        f"({os.cpu_count()} cores, {platform.machine()}), torch {torch.__version__}, "
        f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__}\n"
    )
    print(f"| {'trainer':<36} | train pairs/s | vs plain | end-to-end pairs/s | vs plain |")
    print(f"|{'-' * 38}|---------------|----------|--------------------|----------|")
    for name, (train, total) in rows.items():
        print(
            f"| {name:<36} | {len(pairs) / train:13.1f} | {base_train / train:7.2f}x "
            f"| {len(pairs) / total:18.1f} | {base_total / total:7.2f}x |"
        )


if __name__ == "__main__":
    main()
