"""`embedops finetune`: the seed's training flags plus LoRA, checkpointing and resume."""

from __future__ import annotations

import argparse

ORDER = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune an embedding model on a pairs/triplets file (full or LoRA)",
        description="Fine-tune with MultipleNegativesRankingLoss (hard negatives used when present).",
    )
    add_finetune_arguments(parser)
    parser.set_defaults(run=run, parser=parser)


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags shared by `embedops finetune` and the seed script."""
    from embedops.models import DEFAULT_MODEL

    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True, help="pairs/triplets file: .tsv, .csv or .jsonl")
    data.add_argument("--skip-invalid", action="store_true", help="skip bad lines (counted) instead of failing")
    data.add_argument(
        "--eval-sample-size",
        type=int,
        default=0,
        metavar="N",
        help="hold out N pairs and report MRR@10 / Hit@1 before and after training",
    )
    data.add_argument(
        "--mine-negatives",
        type=int,
        default=0,
        metavar="N",
        help="first mine N hard negatives per pair with the base model (see `embedops mine`)",
    )
    data.add_argument(
        "--mine-corpus",
        metavar="PATH",
        help="passages to mine from: BEIR corpus.jsonl or one per line (default: the positives of --data)",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--base-model", default=DEFAULT_MODEL, help=f"model reference (default: {DEFAULT_MODEL})")
    model.add_argument("--output", required=True, help="artifact directory to create")
    model.add_argument("--force", action="store_true", help="replace an existing output artifact / discard checkpoints")
    model.add_argument("--max-seq-length", type=int, help="truncate inputs to this many tokens")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=1)
    train.add_argument("--batch-size", type=int, default=32, help="pairs per batch (= in-batch negatives + 1)")
    train.add_argument("--lr", type=float, help="learning rate (default: 2e-5 full, 2e-4 LoRA)")
    train.add_argument("--warmup-ratio", type=float, default=0.1)
    train.add_argument("--seed", type=int, default=42)
    train.add_argument(
        "--loss",
        choices=("mnrl", "cached-mnrl"),
        default="mnrl",
        help="cached-mnrl: large batches in small memory (GradCache)",
    )
    train.add_argument("--mini-batch-size", type=int, default=32, help="chunk size for cached-mnrl")
    train.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    train.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16", "bf16"),
        default="auto",
        help="mixed precision on CUDA (auto: bf16 where supported)",
    )
    lora = parser.add_argument_group("LoRA")
    lora.add_argument("--use-lora", action="store_true", help="train a LoRA adapter instead of all weights")
    lora.add_argument("--lora-r", type=int, default=16)
    lora.add_argument("--lora-alpha", type=int, default=32)
    lora.add_argument("--lora-dropout", type=float, default=0.1)
    checkpoints = parser.add_argument_group("checkpoints")
    checkpoints.add_argument(
        "--save-every", type=int, metavar="STEPS", help="checkpoint every N steps (default: each epoch)"
    )
    checkpoints.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its last checkpoint"
    )
    processes = parser.add_argument_group("several processes (DDP)")
    processes.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train in N processes on this machine, in-batch negatives gathered across them "
        "(under torchrun or accelerate launch, leave it out)",
    )
    processes.add_argument(
        "--ddp-timeout",
        type=int,
        default=1800,
        metavar="SECONDS",
        help="longest wait of one process for the others (rank 0 mining negatives included)",
    )


def config_from_args(args: argparse.Namespace):
    from embedops.train.config import FinetuneConfig, LoraSettings

    return FinetuneConfig(
        data=args.data,
        output=args.output,
        base_model=args.base_model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        use_lora=args.use_lora,
        lora=LoraSettings(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout),
        max_seq_length=args.max_seq_length,
        warmup_ratio=args.warmup_ratio,
        seed=args.seed,
        loss=args.loss,
        mini_batch_size=args.mini_batch_size,
        save_every=args.save_every,
        resume=args.resume,
        device=args.device,
        precision=args.precision,
        eval_sample_size=args.eval_sample_size,
        skip_invalid=args.skip_invalid,
        force=args.force,
        mine_negatives=args.mine_negatives,
        mine_corpus=args.mine_corpus,
        ddp_timeout=args.ddp_timeout,
    )


def _launch(args: argparse.Namespace, config) -> int:
    """`--nproc N`: the checks that need no model, then the same command in N processes under torchrun."""
    import os

    from embedops.artifact import check_output_free
    from embedops.errors import ConfigError
    from embedops.train import distributed

    if "WORLD_SIZE" in os.environ:
        raise ConfigError("--nproc starts its own processes; under torchrun or accelerate launch leave it out")
    if args.device not in (None, "cpu", "cuda"):
        raise ConfigError(f"--device {args.device}: with --nproc each process takes cuda:LOCAL_RANK; use cuda or cpu")
    if not config.resume:
        check_output_free(config.output.absolute(), force=config.force)
    distributed.launch(args.nproc, ["finetune", *distributed.argv_without(args.parser, args, {"nproc"})])
    return 0


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.nproc < 1:
        from embedops.errors import ConfigError

        raise ConfigError(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc > 1:
        return _launch(args, config)
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
