"""Kills while fine-tuning writes a checkpoint: --resume continues from the last whole checkpoint and keeps
the run's clock, and a changed recipe on resume is refused."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from faults_common import EMBEDOPS, write_pairs

from embedops.artifact import read_manifest
from embedops.train.finetune import work_dir_for


def finetune_command(data: Path, model: Path, out: Path, *, batch_size: int = 2) -> list[str]:
    return [
        *EMBEDOPS,
        "finetune",
        "--data",
        str(data),
        "--base-model",
        str(model),
        "--output",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        str(batch_size),
        "--save-every",
        "5",
        "--device",
        "cpu",
    ]


@pytest.mark.slow
def test_kill_while_checkpointing_resumes_from_the_last_whole_checkpoint(tmp_path: Path, tiny_model_dir: Path) -> None:
    data, out = write_pairs(tmp_path / "pairs.tsv", 60), tmp_path / "ft"
    command = finetune_command(data, tiny_model_dir, out)
    checkpoints = work_dir_for(out) / "checkpoints"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list(checkpoints.glob("checkpoint-*/trainer_state.json"))) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, "training ended before its second checkpoint"
        time.sleep(0.02)
    time.sleep(random.uniform(0, 0.5))  # a random instant of the saves that follow
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    # Whatever instant the kill hit, leave the newest checkpoint as a kill mid-save does: the trainer
    # state cut short, the weights half written.
    newest = max(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    state = newest / "trainer_state.json"
    if state.is_file():
        state.write_text(state.read_text()[:40])
    weights = newest / "model.safetensors"
    if weights.is_file():
        os.truncate(weights, weights.stat().st_size // 2)
    whole = [p for p in checkpoints.glob("checkpoint-*") if p != newest]
    resumed_step = max(int(p.name.rsplit("-", 1)[1]) for p in whole)
    seconds_before = json.loads((work_dir_for(out) / "clock.json").read_text())["steps"][str(resumed_step)]

    changed_command = [*finetune_command(data, tiny_model_dir, out, batch_size=4), "--resume"]
    changed = subprocess.run(changed_command, capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2 and "different batch_size" in changed.stderr, changed.stderr[-500:]
    assert "Traceback" not in changed.stderr

    result = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"skipping {newest.name}" in result.stderr
    training = read_manifest(out).training
    assert training["steps"] == 60 and training["segments"] == 2
    assert training["seconds"] > seconds_before > 0, "the first segment's training time is counted"
    assert not work_dir_for(out).exists()


def test_latest_complete_passes_over_every_partial_state(tmp_path: Path) -> None:
    from embedops.train.checkpoints import latest_complete

    def checkpoint(step: int, *files: str, state: str = "{}") -> Path:
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        for name in files:
            (path / name).write_bytes(b"x")
        if state is not None:
            (path / "trainer_state.json").write_text(state)
        return path

    whole = ("model.safetensors", "optimizer.pt", "scheduler.pt")
    good = checkpoint(5, *whole)
    checkpoint(10, "model.safetensors", "optimizer.pt")  # killed before the scheduler was saved
    checkpoint(15, *whole, state='{"global_st')  # killed while the trainer state was written
    checkpoint(20, "optimizer.pt", "scheduler.pt")  # weights missing
    assert latest_complete(tmp_path) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]


def test_the_run_clock_starts_from_the_seconds_behind_the_resumed_checkpoint(tmp_path: Path) -> None:
    from embedops.train.checkpoints import RunClock

    (tmp_path / "clock.json").write_text(json.dumps({"steps": {"10": 100.0, "20": 250.0}, "segments": 1}))
    clock = RunClock(tmp_path, tmp_path / "checkpoint-10")
    assert 100.0 <= clock.seconds < 110.0 and clock.segments == 2
    assert RunClock(tmp_path, None).seconds < 10.0, "a run started over counts from zero"
