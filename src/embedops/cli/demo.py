"""`embedops demo`: fine-tune the bundled model on the bundled sample data and show what it gained."""

from __future__ import annotations

import argparse

ORDER = 0
SAMPLE = "sample_pairs.tsv"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="fine-tune the bundled model on bundled sample data (a photo-app help center) and compare",
    )
    parser.add_argument("--output", default="models/demo-finetuned", help="where to write the demo model")
    parser.add_argument("--holdout", type=int, default=40, help="pairs held out for the before/after check")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from importlib.resources import as_file, files

    from embedops.cli.finetune import run as run_finetune

    with as_file(files("embedops.resources") / SAMPLE) as sample:
        print(f"fine-tuning the bundled all-MiniLM-L6-v2 on {sample.name} ({args.holdout} pairs held out)\n")
        finetune_args = argparse.Namespace(
            data=str(sample),
            output=args.output,
            base_model="sentence-transformers/all-MiniLM-L6-v2",
            epochs=4,
            batch_size=16,
            lr=1e-4,
            use_lora=False,
            lora_r=16,
            lora_alpha=32,
            lora_dropout=0.1,
            max_seq_length=None,
            warmup_ratio=0.1,
            seed=42,
            loss="mnrl",
            mini_batch_size=32,
            save_every=None,
            resume=False,
            device=None,
            precision="auto",
            eval_sample_size=args.holdout,
            skip_invalid=False,
            force=True,
        )
        return run_finetune(finetune_args)
