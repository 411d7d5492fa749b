"""The flags and the launcher that `finetune` and `pipeline` share for training in several processes."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_process_flags(parser: argparse.ArgumentParser) -> None:
    """--nproc and --ddp-timeout."""
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
        metavar="SECONDS",
        help="longest wait of one process for the others in a training step (waits for rank 0's own work, "
        "such as mining negatives or validating, have no such limit)",
    )


def launch_if_asked(
    args: argparse.Namespace,
    *,
    how_to_continue: str,
    free_output: Path | None = None,
    force: bool = False,
    leave_out: frozenset[str] = frozenset(),
) -> int | None:
    """With `--nproc N` (N > 1): the checks that need no model, then the same command (less `leave_out`)
    in N processes under torchrun; returns its exit code. None when this process is to do the work itself.
    `how_to_continue`: what the error says when a process dies.
    `free_output`: an output that must not exist yet (unless `force`), checked here once for all."""
    import os

    from embedops.artifact import check_output_free
    from embedops.errors import ConfigError
    from embedops.train import distributed

    if args.nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc == 1:
        return None
    if "WORLD_SIZE" in os.environ:
        raise ConfigError("--nproc starts its own processes; under torchrun or accelerate launch leave it out")
    if args.device not in (None, "cpu", "cuda"):
        raise ConfigError(f"--device {args.device}: with --nproc each process takes cuda:LOCAL_RANK; use cuda or cpu")
    if free_output is not None:
        check_output_free(free_output.absolute(), force=force)
    argv = distributed.argv_without(args.parser, args, {"nproc", *leave_out})
    return distributed.launch(args.nproc, [args.command, *argv], how_to_continue)
