"""`embedops finetune`: the seed's training flags plus LoRA, checkpointing and resume."""

from __future__ import annotations

import argparse

from embedops.cli._processes import add_process_flags, launch_if_asked
from embedops.configs import help_with_defaults

ORDER = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune an embedding model on a pairs/triplets file (full or LoRA)",
        description="Fine-tune with MultipleNegativesRankingLoss (hard negatives used when present).",
        formatter_class=help_with_defaults("embedops.train.config:FinetuneConfig"),
    )
    add_finetune_arguments(parser)
    parser.set_defaults(run=run, parser=parser)


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags shared by `embedops finetune` and the seed script; their defaults are FinetuneConfig's."""
    from embedops.train.config import DEFAULT_LR

    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True, help="pairs/triplets file: .tsv, .csv or .jsonl")
    data.add_argument("--skip-invalid", action="store_true", help="skip bad lines (counted) instead of failing")
    data.add_argument(
        "--eval-sample-size",
        type=int,
        metavar="N",
        help="hold out N pairs and report MRR@10 / Hit@1 before and after training",
    )
    data.add_argument(
        "--mine-negatives",
        type=int,
        metavar="N",
        help="first mine N hard negatives per pair with the base model (see `embedops mine`)",
    )
    data.add_argument(
        "--mine-corpus",
        metavar="PATH",
        help="passages to mine from: BEIR corpus.jsonl or one per line (default: the positives of --data)",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--base-model", help="model reference")
    model.add_argument("--output", required=True, help="artifact directory to create")
    model.add_argument("--force", action="store_true", help="replace an existing output artifact / discard checkpoints")
    model.add_argument("--max-seq-length", type=int, help="truncate inputs to this many tokens")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, help="passes over the data")
    train.add_argument("--batch-size", type=int, help="pairs per batch (= in-batch negatives + 1)")
    train.add_argument(
        "--lr",
        type=float,
        help=f"learning rate (default: {DEFAULT_LR['full']:g} full, {DEFAULT_LR['lora']:g} LoRA)",
    )
    train.add_argument("--warmup-ratio", type=float, help="share of the steps that warm the learning rate up")
    train.add_argument("--seed", type=int, help="data order and initialisation")
    train.add_argument(
        "--loss", choices=("mnrl", "cached-mnrl"), help="cached-mnrl: large batches in small memory (GradCache)"
    )
    train.add_argument("--mini-batch-size", type=int, help="chunk size for cached-mnrl")
    train.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    train.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16", "bf16"),
        help="mixed precision on CUDA (auto: bf16 where supported)",
    )
    lora = parser.add_argument_group("LoRA")
    lora.add_argument("--use-lora", action="store_true", help="train a LoRA adapter instead of all weights")
    lora.add_argument("--lora-r", type=int, help="rank of the adapter's update matrices")
    lora.add_argument("--lora-alpha", type=int, help="scale of the update (alpha / r)")
    lora.add_argument("--lora-dropout", type=float, help="dropout on the adapter's input")
    checkpoints = parser.add_argument_group("checkpoints")
    checkpoints.add_argument(
        "--save-every", type=int, metavar="STEPS", help="checkpoint every N steps (default: each epoch)"
    )
    checkpoints.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its last checkpoint"
    )
    add_process_flags(parser)


def run(args: argparse.Namespace) -> int:
    from embedops.train.config import FinetuneConfig

    config = FinetuneConfig.from_flags(vars(args))
    code = launch_if_asked(
        args,
        how_to_continue="continue from the last checkpoint with --resume",
        free_output=None if config.resume else config.output,
        force=config.force,
    )
    if code is not None:
        return code
    from embedops.train.distributed import current_world
    from embedops.train.finetune import finetune

    result = finetune(config)
    if not current_world().is_main:
        return 0  # rank 0 reports
    training = result.manifest.training or {}
    print(f"\nsaved {result.manifest.kind} model to {result.path}")
    print(
        f"  {training['pairs']} pairs, {training['steps']} steps in {training['seconds']} s "
        f"({training['pairs_per_second']} pairs/s)"
    )
    if result.stats.skipped:
        print(f"  skipped {result.stats.skipped} invalid line(s), e.g. {result.stats.skipped_reasons[0]}")
    sanity = training.get("sanity_eval")
    if sanity:
        before, after = sanity["before"], sanity["after"]
        print(f"  held-out sanity eval on {sanity['pairs']} pairs:")
        for metric in before:
            delta = (after[metric] - before[metric]) * 100
            print(f"    {metric:<7} {before[metric]:.4f} -> {after[metric]:.4f}  ({delta:+.2f} points)")
    print(f"  details: embedops info {result.path}")
    return 0
