"""Fine-tuning across processes: torchrun, `accelerate launch` or `embedops finetune --nproc N`.

Every process trains a replica under DDP (the HF trainer wraps the model itself when the launcher's
environment says so); the loss gathers the other processes' positives and negatives, so each anchor is
ranked against world_size x batch candidates, as one process with the whole batch would rank it.
Everything that writes (work directory, mined negatives, checkpoint choice, the artifact) happens on
rank 0; the others wait for its outcome, and an error there is handed to them, so no process is left
waiting in a collective for a peer that has already given up. A process that dies is the launcher's
to handle: torchrun stops the others when one exits non-zero, and `timeout_s` bounds any collective.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from embedops.errors import ConfigError, EmbedopsError, MainProcessError

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Warnings the libraries raise on every process under DDP about their own calls, which users cannot act on.
_LIBRARY_DEPRECATIONS = (
    "`broadcast_buffers` is deprecated",
    "torch.distributed.nn.functional.all_gather is deprecated",
)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes, as the launcher's environment gives it."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def nodes(self) -> int:
        return max(1, self.size // max(1, self.local_size))


def current_world() -> World:
    """Read RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE (set by torchrun and `accelerate launch`)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(
        rank=int(os.environ.get("RANK", "0")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        size=size,
        local_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(size))),
    )


class ProcessFailedError(EmbedopsError):
    """A training process died or failed; the launcher stopped the others."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Waits for rank 0's own work (mining, validation, the pipeline's other stages) go through a gloo group
# of their own with no practical limit: rank 0 may evaluate a large corpus for longer than a training
# collective should wait. A process that dies is noticed at once anyway, by the launcher.
_WAIT_FOR_MAIN = timedelta(days=7)
_waiting_group: Any = None
# Set on an exception whose message rank 0 has already sent to the others.
_SHARED = "_embedops_shared_with_other_ranks"


@contextmanager
def process_group(world: World, device: str, timeout_s: int) -> Iterator[str]:
    """Join the process group (gloo on CPU, nccl on CUDA) for the block; yields this process's device.

    The group is created here, before the trainer, because rank 0's preparation is shared through it;
    accelerate then uses the group as it finds it. A group that already exists (the pipeline's, which
    outlives one training run) is used and left for its owner to close. `timeout_s` bounds each
    collective of the training itself."""
    global _waiting_group
    import torch
    import torch.distributed as dist

    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: under several processes each takes cuda:LOCAL_RANK; use cuda or cpu")
    if device == "cuda":
        torch.cuda.set_device(world.local_rank)
        device = f"cuda:{world.local_rank}"
    owner = not dist.is_initialized()
    for deprecated in _LIBRARY_DEPRECATIONS:  # raised inside accelerate and sentence-transformers, once per process
        warnings.filterwarnings("ignore", message=deprecated, category=FutureWarning)
    if owner:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        if not world.is_main:
            logging.getLogger("embedops").setLevel(logging.WARNING)  # one log, rank 0's
        logger.info(
            "process group: %d processes on %d node(s), backend %s", world.size, world.nodes, dist.get_backend()
        )
    waits_here = _waiting_group is None
    if waits_here:
        _waiting_group = dist.new_group(backend="gloo", timeout=_WAIT_FOR_MAIN)
    try:
        yield device
    finally:
        if waits_here:
            _waiting_group = None
        if owner and dist.is_initialized():
            dist.destroy_process_group()


def _broadcast(value: Any) -> Any:
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, group=_waiting_group)
    return box[0]


def _share_error(exc: Exception) -> None:
    """Rank 0: send `exc` to the others, which raise it as MainProcessError."""
    if not getattr(exc, _SHARED, False):
        _broadcast(("error", str(exc), exc.exit_code if isinstance(exc, EmbedopsError) else 1))
        setattr(exc, _SHARED, True)


def on_main(world: World, work: Callable[[], T]) -> T:
    """Run `work` on rank 0 and give every rank its result (or its error)."""
    if world.size == 1:
        return work()
    return _run_first(world, work, share=True)


def main_first(world: World, work: Callable[[], T]) -> T:
    """Run `work` on rank 0, then on the others (a cache rank 0 filled, files it wrote)."""
    if world.size == 1:
        return work()
    return _run_first(world, work, share=False)


def _run_first(world: World, work: Callable[[], T], *, share: bool) -> T:
    if world.is_main:
        try:
            result = work()
        except Exception as exc:
            _share_error(exc)
            raise
        _broadcast(("ok", result if share else None, 0))
        return result
    status, value, code = _broadcast(None)
    if status == "error":
        raise MainProcessError(f"{value} (on rank 0)", code)
    return value if share else work()


def deadline_passed(deadline: float | None, margin_s: float = 0.0) -> bool:
    """Whether `deadline` (time.time()) is less than `margin_s` away, as rank 0's clock says: every process
    must take the same decision to stop, or the ones that carry on wait in a collective for the others."""
    if deadline is None:
        return False
    return on_main(current_world(), lambda: time.time() + margin_s >= deadline)


class Crew:
    """Rank 0 leads a run of several stages (the pipeline) and the other processes follow it: they wait
    while it prepares, evaluates and quantizes alone, and join it for the work all processes share
    (training), which it hands out with `everywhere`."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._stranded = False  # rank 0 failed inside a job without telling the others, still inside it

    def run(self, work: Callable[[], T]) -> T:
        """Rank 0 runs `work`, which hands out jobs with `everywhere`; the other processes run those jobs as
        they come. Every process returns rank 0's result, or raises its error."""
        if self.world.size == 1:
            return work()
        if self.world.is_main:
            try:
                result = work()
            except Exception as exc:
                if not self._stranded:  # else rank 0 exits, and the launcher stops the others
                    _share_error(exc)
                raise
            _broadcast(("done", result, 0))
            return result
        while True:
            kind, value, code = _broadcast(None)
            if kind == "job":
                with suppress(MainProcessError):  # rank 0 failed inside the job and said so; it says so again
                    value()
            elif kind == "error":
                raise MainProcessError(f"{value} (on rank 0)", code)
            else:
                return cast(T, value)

    def everywhere(self, job: Callable[[], T]) -> T:
        """Rank 0: run `job` (picklable) in every process; returns rank 0's result."""
        if self.world.size == 1:
            return job()
        _broadcast(("job", job, 0))
        try:
            return job()
        except Exception as exc:
            self._stranded = not getattr(exc, _SHARED, False)
            raise


def record(world: World, batch_size: int, device: str) -> dict[str, Any]:
    """The manifest's account of a multi-process run: how many processes, and the batch the loss saw."""
    return {
        "world_size": world.size,
        "nodes": world.nodes,
        "backend": "nccl" if device.startswith("cuda") else "gloo",
        "per_process_batch_size": batch_size,
        "effective_batch_size": batch_size * world.size,
        "gather_across_processes": True,
    }


def trainer_arguments(world: World, use_cuda: bool, timeout_s: int) -> dict[str, Any]:
    """The TrainingArguments a multi-process run adds; none for one process."""
    if world.size == 1:
        return {}
    from embedops.train.batches import ProcessSplitBatchSampler

    return {
        "ddp_backend": "nccl" if use_cuda else "gloo",
        "ddp_timeout": timeout_s,
        "batch_sampler": ProcessSplitBatchSampler,
    }


def plain_cpu_device(arguments: Any) -> None:
    """accelerate names a CPU process's device cpu:0, to which torch.load cannot map a checkpoint's
    optimizer state (--resume failed with "don't know how to restore data location"); a CPU has one
    device, so plain "cpu" is the same place. Sets the value transformers' own cached_property keeps."""
    import torch

    if arguments.device.type == "cpu" and arguments.device.index is not None:
        setattr(arguments, "__cached__setup_devices", torch.device("cpu"))
        if arguments.device.index is not None:
            logger.warning("could not set the trainer's device to plain cpu: --resume may fail to load the optimizer")


# The file through which rank 0 tells `launch` that it stopped on an error it reported itself.
REPORTED_FILE_VARIABLE = "EMBEDOPS_REPORTED_EXIT_FILE"


def note_reported(exit_code: int) -> None:
    """Rank 0 under `launch`: record that this process reported its error and exits with `exit_code`."""
    path = os.environ.get(REPORTED_FILE_VARIABLE)
    if path and current_world().is_main:
        Path(path).write_text(str(exit_code), encoding="utf-8")


def launch(nproc: int, argv: list[str], how_to_continue: str) -> int:
    """Run `embedops ARGV` in `nproc` processes on this machine through torchrun's own launcher, which
    picks a free rendezvous port and stops every process when one fails. Returns the exit code: rank 0's
    when it stopped on an error it reported itself (a failed gate exits 1, bad input 2). When a process
    died instead, the error names it and says `how_to_continue`."""
    import tempfile

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # torchrun logs a failed process at ERROR with its own formatting; the error is reported here instead.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    launcher = get_args_parser().parse_args(
        ["--standalone", f"--nproc_per_node={nproc}", "--max_restarts=0", "--module", "embedops", *argv]
    )
    with tempfile.TemporaryDirectory(prefix="embedops-launch-") as scratch:
        reported = Path(scratch) / "reported"
        os.environ[REPORTED_FILE_VARIABLE] = str(reported)  # the processes inherit it
        try:
            run(launcher)
        except ChildFailedError as exc:
            if reported.is_file():  # rank 0 said what went wrong; the others were stopped because of it
                return int(reported.read_text(encoding="utf-8"))
            rank, failure = exc.get_first_failure()  # the cause; the others were stopped because of it
            code = failure.exitcode
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise ProcessFailedError(
                f"training process {rank} (pid {failure.pid}) {how}; the others were stopped ({how_to_continue})",
                code if 0 < code < 126 else 1,
            ) from None
        finally:
            del os.environ[REPORTED_FILE_VARIABLE]
    return 0


def argv_without(parser: argparse.ArgumentParser, args: argparse.Namespace, leave_out: set[str]) -> list[str]:
    """The flags of `args` that differ from their defaults, as a command line again."""
    argv: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in leave_out | {"help"}:
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default or value is None:
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):  # --gate A --gate B
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv
