"""Fine-tuning in several processes on CPU (gloo over loopback), on a tiny model without dropout.

Dropout is off so that a step's loss depends on the weights and the batch alone: one process with a batch
of 16 and two with 8 each (gathered) then see the same 16 pairs per step and must log the same losses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_finetune import pairs_file

from embedops.artifact import artifact_problems, read_manifest
from embedops.cli import main
from embedops.models import load
from embedops.train.batches import split_evenly
from embedops.train.config import FinetuneConfig
from embedops.train.distributed import World, argv_without, current_world
from embedops.train.finetune import work_dir_for
from embedops.train.prepare import _prepare_work_dir

# The loss is logged rounded to 4 decimals; grad norms unrounded. Measured: equal to the 4th decimal, grad
# norms within 2e-7 relative (float sums in a different order).
LOSS_TOLERANCE = 1e-3
GRAD_NORM_TOLERANCE = 1e-4  # relative


@pytest.fixture(scope="module")
def still_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conftest's tiny BERT, with dropout 0: each step's loss is then a function of the batch."""
    from conftest import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("still"), "still-model", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _embedops(*args: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "embedops", "finetune", "--device", "cpu", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env())


def _log(artifact: Path) -> list[dict]:
    lines = (artifact / "training_log.jsonl").read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if "loss" in entry]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accelerate(*args: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    """`accelerate launch` as its users run it; `--multi_gpu` is its flag for several processes, and on a
    machine without GPUs they run on CPU with gloo."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--main_process_port", str(_free_port()), "-m", "embedops", "finetune"]
    command = [*launcher, "--device", "cpu", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env())


# Hard negatives are where a gather can go wrong (an anchor paired with its own negative as positive), and
# the cached loss gathers in its own code path: both must give the one-process losses step by step.
VARIANTS = {
    "pairs, --nproc": ([], False, "nproc"),
    "hard negatives, accelerate launch": ([], True, "accelerate"),
    "hard negatives, cached loss, --nproc": (["--loss", "cached-mnrl", "--mini-batch-size", "4"], True, "nproc"),
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_two_processes_publish_once_and_match_one_process_with_the_whole_batch(
    tmp_path: Path, still_model: Path, variant: str
) -> None:
    flags, negatives, launcher = VARIANTS[variant]
    data = pairs_file(tmp_path / "pairs.tsv", 64, negatives=negatives)
    common = ["--data", str(data), "--base-model", str(still_model), "--lr", "1e-3", *flags]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["finetune", "--device", "cpu", *common, "--output", str(one), "--batch-size", "16"]) == 0
    if launcher == "nproc":
        result = _embedops(*common, "--output", str(two), "--batch-size", "8", "--nproc", "2")
    else:
        result = _accelerate(*common, "--output", str(two), "--batch-size", "8")
    assert result.returncode == 0, result.stderr[-3000:]

    assert result.stdout.count("saved finetuned model to") == 1, "rank 0 alone publishes and reports"
    assert artifact_problems(two, read_manifest(two)) == []
    assert not work_dir_for(two).exists() and [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []
    training = read_manifest(two).training
    assert training["distributed"] == {
        "world_size": 2,
        "nodes": 1,
        "backend": "gloo",
        "per_process_batch_size": 8,
        "effective_batch_size": 16,
        "gather_across_processes": True,
    }
    assert training["steps"] == read_manifest(one).training["steps"] == 4
    assert load(two, device="cpu").encode(["printer jam"]).shape == (1, 32)

    single, gathered = _log(one), _log(two)
    assert len(single) == len(gathered) == 4
    for a, b in zip(single, gathered, strict=True):
        assert abs(a["loss"] - b["loss"]) <= LOSS_TOLERANCE, (a, b)
        assert abs(a["grad_norm"] - b["grad_norm"]) <= GRAD_NORM_TOLERANCE * a["grad_norm"], (a, b)


@pytest.mark.slow
def test_two_nodes_on_loopback_train_one_model(tmp_path: Path, still_model: Path) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 32)
    out, port = tmp_path / "two-nodes", _free_port()
    launchers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc_per_node",
                "1",
                "--node_rank",
                str(node),
                "--rdzv_backend",
                "c10d",
                "--rdzv_endpoint",
                f"127.0.0.1:{port}",
                "--local_addr",
                "127.0.0.1",
                "-m",
                "embedops",
                "finetune",
                *("--device", "cpu", "--data", str(data), "--base-model", str(still_model), "--output", str(out)),
                *("--batch-size", "8", "--lr", "1e-3"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for node in (0, 1)
    ]
    outputs = [launcher.communicate(timeout=110) for launcher in launchers]
    for launcher, (_, stderr) in zip(launchers, outputs, strict=True):
        assert launcher.returncode == 0, stderr[-3000:]
    assert sum(stdout.count("saved finetuned model to") for stdout, _ in outputs) == 1
    assert artifact_problems(out, read_manifest(out)) == []
    distributed = read_manifest(out).training["distributed"]
    assert distributed["world_size"] == 2 and distributed["nodes"] == 2 and distributed["effective_batch_size"] == 16


def _worker(parent: psutil.Process, rank: int, deadline: float) -> psutil.Process:
    while time.monotonic() < deadline:
        for child in parent.children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank):
                    return child
            except psutil.Error:
                continue
        time.sleep(0.1)
    raise AssertionError(f"no worker with rank {rank}")


@pytest.mark.slow
def test_a_killed_process_ends_the_run_and_resume_finishes_it(tmp_path: Path, still_model: Path) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 192)
    out = tmp_path / "ft"
    args = [
        *("--data", str(data), "--base-model", str(still_model), "--output", str(out), "--epochs", "2"),
        *("--batch-size", "2", "--save-every", "10", "--nproc", "2"),
    ]
    command = [sys.executable, "-m", "embedops", "finetune", "--device", "cpu", *args]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    checkpoints = work_dir_for(out) / "checkpoints"
    deadline = time.monotonic() + 90
    while not any(checkpoints.glob("checkpoint-*/trainer_state.json")) and time.monotonic() < deadline:
        assert parent.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.05)
    workers = [_worker(psutil.Process(parent.pid), rank, deadline) for rank in (0, 1)]
    os.kill(workers[1].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = parent.communicate(timeout=60)  # no hang: the launcher stops rank 0 and returns
    assert parent.returncode != 0
    assert "training process 1" in stderr and "killed by signal 9" in stderr
    assert time.monotonic() - killed_at < 60
    assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)
    assert not out.exists(), "a killed run must not leave an artifact"

    result = _embedops(*args, "--resume", timeout=110)
    assert result.returncode == 0, result.stderr[-3000:]
    training = read_manifest(out).training
    assert training["steps"] == 2 * 192 // 4 and training["segments"] == 2
    assert not work_dir_for(out).exists()


def test_batches_are_cut_into_equal_consecutive_parts() -> None:
    assert split_evenly(list(range(16)), 2) == [list(range(8)), list(range(8, 16))]
    assert split_evenly([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert [len(part) for part in split_evenly(list(range(10)), 4)] == [3, 3, 2, 2]


def test_world_comes_from_the_launchers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert current_world() == World()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    world = current_world()
    assert (world.rank, world.local_rank, world.size, world.nodes, world.is_main) == (3, 1, 4, 2, False)


def test_nproc_relaunches_the_same_command() -> None:
    from embedops.cli import build_parser

    args = build_parser().parse_args(
        ["finetune", "--data", "d.tsv", "--output", "o", "--use-lora", "--lr", "0.001", "--nproc", "2"]
    )
    assert argv_without(args.parser, args, {"nproc"}) == [
        "--data",
        "d.tsv",
        "--output",
        "o",
        "--lr",
        "0.001",
        "--use-lora",
    ]
    pipeline = ["pipeline", "--data", "d.tsv", "--output", "o", "--gate", "ndcg@10>=+1", "--gate", "hit@1>=0.5"]
    args = build_parser().parse_args([*pipeline, "--nproc", "2", "--serve"])
    assert argv_without(args.parser, args, {"nproc", "serve", "port"}) == pipeline[1:]


def test_resume_with_another_number_of_processes_is_refused(tmp_path: Path) -> None:
    from embedops.errors import ConfigError

    data = pairs_file(tmp_path / "pairs.tsv", 8)
    config = FinetuneConfig(data=data, output=tmp_path / "ft")
    _prepare_work_dir(config, "sha", world_size=2)
    with pytest.raises(ConfigError, match="world_size"):
        _prepare_work_dir(FinetuneConfig(data=data, output=tmp_path / "ft", resume=True), "sha", world_size=1)
    assert _prepare_work_dir(FinetuneConfig(data=data, output=tmp_path / "ft", resume=True), "sha", 2)[1] is True


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--nproc", "0"], "--nproc must be at least 1"),
        (["--nproc", "2", "--device", "cuda:1"], "each process takes cuda:LOCAL_RANK"),
    ],
)
def test_bad_process_flags_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], flags, message) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 8)
    assert main(["finetune", "--data", str(data), "--output", str(tmp_path / "ft"), *flags]) == 2
    assert message in capsys.readouterr().err
