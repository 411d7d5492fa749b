"""`embedops pipeline` in two processes on CPU (gloo over loopback): rank 0 runs the stages, both train,
rank 0 alone validates and every process follows its decisions (probe, roll-back, stop), one report.

A process that took a different decision would leave the other waiting in a collective: the run would
fail or hang (and hit the subprocess timeout) instead of finishing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_finetune_ddp import _worker
from test_pipeline import pairs_file

from embedops.artifact import artifact_problems, read_manifest
from embedops.train.finetune import work_dir_for

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "embedops", "pipeline", "--device", "cpu", "--nproc", "2", *args]


def _pipeline(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(*args), capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.mark.slow
def test_two_processes_train_rank_0_validates_and_reports_once(tmp_path: Path, tiny_model_dir: Path) -> None:
    data, output = pairs_file(tmp_path / "pairs.tsv", 48), tmp_path / "run"
    flags = ["--data", str(data), "--output", str(output), "--base-model", str(tiny_model_dir)]
    flags += ["--batch-size", "4", "--epochs", "3", "--patience", "1", "--max-drift", "0.5"]
    result = _pipeline(*flags)
    assert result.returncode == 0, result.stderr[-3000:]

    assert result.stdout.count("report: ") == 1, "rank 0 alone prints the summary"
    assert result.stderr.count("validation ndcg@10 before training") == 1, "rank 0 alone validates and logs"
    document = json.loads((output / "pipeline.json").read_text())
    assert document["status"] == "passed"
    finetune = document["stages"]["finetune"]
    assert finetune["result"]["distributed"] == {
        "world_size": 2,
        "nodes": 1,
        "backend": "gloo",
        "per_process_batch_size": 4,
        "effective_batch_size": 8,
        "gather_across_processes": True,
    }
    selection = finetune["result"]["selection"]
    assert [item["lr"] for item in selection["probe"]["candidates"]] == [2e-5, 5e-5, 1e-4]
    assert selection["curve"][0]["epoch"] == 0 and len(selection["curve"]) >= 2
    assert selection["stopped_by"] in ("patience", "ceiling")
    manifest = read_manifest(output / "finetuned")
    assert artifact_problems(output / "finetuned", manifest) == []
    assert manifest.training["distributed"]["world_size"] == 2
    assert not work_dir_for(output / "finetuned").exists()
    assert read_manifest(output / "quantized").dtype == "int8"
    assert "2 processes on 1 node(s) (gloo)" in (output / "report.md").read_text()

    again = _pipeline(*flags)  # the same command in the same number of processes reuses every stage
    assert again.returncode == 0, again.stderr[-3000:]
    stages = json.loads((output / "pipeline.json").read_text())["stages"]
    assert {record["status"] for record in stages.values()} == {"reused"}


@pytest.mark.slow
def test_a_failed_gate_in_two_processes_exits_1_with_one_error_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    data, output = pairs_file(tmp_path / "pairs.tsv", 32), tmp_path / "run"
    flags = ["--data", str(data), "--output", str(output), "--base-model", str(tiny_model_dir), "--batch-size", "4"]
    result = _pipeline(*flags, "--quantize", "none", "--time-budget", "1s", "--gate", "ndcg@10>=+100")
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "gate ndcg@10>=+100 failed" in errors[0], errors
    document = json.loads((output / "pipeline.json").read_text())
    assert document["status"] == "failed"
    selection = document["stages"]["finetune"]["result"]["selection"]
    assert selection["stopped_by"] == "budget"  # a stop on rank 0's clock, taken by both processes
    assert (output / "report.md").is_file()


@pytest.mark.slow
def test_a_killed_process_stops_the_run_and_the_same_command_continues_it(tmp_path: Path, tiny_model_dir: Path) -> None:
    data, output = pairs_file(tmp_path / "pairs.tsv", 800), tmp_path / "run"
    flags = ["--data", str(data), "--output", str(output), "--base-model", str(tiny_model_dir), "--batch-size", "4"]
    flags += ["--epochs", "3", "--patience", "3", "--lr", "1e-4", "--mine-negatives", "0", "--quantize", "none"]
    parent = subprocess.Popen(_command(*flags), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    state = output / ".finetuned.work" / "selection.json"
    deadline = time.monotonic() + 180
    while not (state.is_file() and len(json.loads(state.read_text())["curve"]) >= 2):  # epoch 1 scored
        assert parent.poll() is None and time.monotonic() < deadline, "the run ended before its first epoch"
        time.sleep(0.1)
    workers = [_worker(psutil.Process(parent.pid), rank, deadline) for rank in (0, 1)]
    os.kill(workers[1].pid, signal.SIGKILL)
    _, stderr = parent.communicate(timeout=60)  # no hang: the launcher stops rank 0 and returns
    assert parent.returncode != 0 and "training process 1" in stderr and "run the same command again" in stderr
    assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)
    assert not (output / "finetuned").exists(), "a killed run must not leave an artifact"

    result = _pipeline(*flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed: validation curve of" in result.stderr
    training = read_manifest(output / "finetuned").training
    assert training["segments"] == 2 and training["epochs_run"] == 3
    assert [point["epoch"] for point in training["selection"]["curve"]] == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_full_disk_on_rank_0_mid_training_ends_the_run_at_once_in_one_line(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Rank 0 alone writes, so only it meets the full disk, inside training where the others wait in a
    collective it will not join: it must end at once with its own error, not leave them (and itself)
    waiting out --ddp-timeout, nor be reported as a process the launcher stopped."""
    import resource

    data, output = pairs_file(tmp_path / "pairs.tsv", 32), tmp_path / "run"
    flags = ["--data", str(data), "--output", str(output), "--base-model", str(tiny_model_dir), "--batch-size", "4"]
    flags += ["--quantize", "none", "--lr", "1e-4", "--ddp-timeout", "600"]

    def full_disk() -> None:  # files stop at 1 MB: the run's small files fit, the 4 MB best weights do not
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    started = time.monotonic()
    result = subprocess.run(
        _command(*flags), capture_output=True, text=True, timeout=240, env=ENV, preexec_fn=full_disk
    )
    assert time.monotonic() - started < 200, "the run waited for a process that had failed"
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "File too large" in errors[0], result.stderr[-3000:]
    assert "training process" not in result.stderr
    assert not (output / "finetuned").exists()
