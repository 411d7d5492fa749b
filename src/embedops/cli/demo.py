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

    from embedops.cli.finetune import add_finetune_arguments
    from embedops.cli.finetune import run as run_finetune

    with as_file(files("embedops.resources") / SAMPLE) as sample:
        print(f"fine-tuning the bundled all-MiniLM-L6-v2 on {sample.name} ({args.holdout} pairs held out)\n")
        # The demo is `embedops finetune` with a recipe for a small domain set: a few epochs at a
        # higher learning rate than the defaults, which suit large sets.
        parser = argparse.ArgumentParser()
        add_finetune_arguments(parser)
        finetune_args = parser.parse_args(
            [
                "--data",
                str(sample),
                "--output",
                args.output,
                "--epochs",
                "3",
                "--batch-size",
                "32",
                "--lr",
                "1e-4",
                "--eval-sample-size",
                str(args.holdout),
                "--force",
            ]
        )
        return run_finetune(finetune_args)
