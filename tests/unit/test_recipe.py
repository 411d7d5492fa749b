"""Fine-tuning that adapts to the data: the learning-rate probe and the stopping rule follow planted
validation curves, the time budget stops training and publishes the best weights so far, and a stopped
pipeline continues mid-probe and mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments
from transformers.optimization import get_constant_schedule_with_warmup

from embedops.cli import main
from embedops.evaluate.datasets import RetrievalTask, cap_documents, load_triples
from embedops.models import load
from embedops.pipeline.config import parse_duration
from embedops.train.finetune import work_dir_for
from embedops.train.probe import probe_learning_rates, probe_steps
from embedops.train.selection import EpochSelection, KeepBestEpoch

TOPICS = ["storage", "backup", "network", "login", "upload", "search", "billing", "printer"]


def pairs_file(path: Path, count: int) -> Path:
    lines = [
        f"how do I fix {TOPICS[i % 8]} problem number {i}\tto repair {TOPICS[i % 8]} issue {i}, restart the service"
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class PlantedSelection(EpochSelection):
    """Validation that returns planted scores in order instead of scoring the model."""

    def __init__(self, scores: list[float], **kwargs: object) -> None:
        task = RetrievalTask("planted", "triples", ["q"], ["d"], [np.array([0])])
        super().__init__(task, "ndcg@10", "planted curve", **kwargs)  # type: ignore[arg-type]
        self.planted = list(scores)

    def score(self, model: object) -> float:
        return self.planted.pop(0)


def drive(callback: KeepBestEpoch, epochs: int, scheduler: object, steps_per_epoch: int = 2) -> TrainerControl:
    """Run the callback's epoch hooks as the trainer does, with a real optimizer and LambdaLR schedule."""
    args = TrainingArguments(output_dir="unused", num_train_epochs=epochs, report_to="none")
    state, control = TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control)
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            scheduler.optimizer.step()  # type: ignore[attr-defined]
            scheduler.step()  # type: ignore[attr-defined]
            callback.on_step_end(args, state, control)
            if control.should_training_stop:
                break
        state.epoch = float(epoch)
        callback.on_epoch_end(args, state, control, optimizer=scheduler.optimizer, lr_scheduler=scheduler)  # type: ignore[attr-defined]
        if control.should_training_stop:
            break
    return control


def schedule(model: torch.nn.Module, lr: float = 1e-4) -> object:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return get_constant_schedule_with_warmup(optimizer, num_warmup_steps=1)


def test_probe_picks_the_best_rate_on_a_planted_curve_and_continues_after_a_stop(tmp_path: Path) -> None:
    planted = {2e-5: 0.50, 5e-5: 0.61, 1e-4: 0.58}  # a domain-shift set: a larger step pays, up to a point
    trained: list[float] = []
    resets: list[int] = []
    current: list[float] = []
    interrupt = {1e-4}  # the first run is stopped during the third candidate

    def train_at(rate: float) -> float:
        if rate in interrupt:
            interrupt.clear()
            raise KeyboardInterrupt
        trained.append(rate)
        current.append(planted[rate])
        return 1.0

    def score() -> float:
        return current[-1] if current else 0.40  # the base model scores 0.40

    rates = list(planted)
    with pytest.raises(KeyboardInterrupt):
        probe_learning_rates(rates, train_at, score, lambda: resets.append(1), steps=5, work=tmp_path)
    assert trained == [2e-5, 5e-5] and json.loads((tmp_path / "probe.json").read_text())["base_score"] == 0.40

    trained.clear()
    outcome = probe_learning_rates(rates, train_at, score, lambda: resets.append(1), steps=5, work=tmp_path)
    assert trained == [1e-4]  # finished candidates are kept, not trained again
    assert outcome.chosen == 5e-5 and outcome.base_score == 0.40
    assert [item["score"] for item in outcome.candidates] == [0.50, 0.61, 0.58]

    flat = {2e-5: 0.70, 5e-5: 0.70, 1e-4: 0.65}  # WikiQA-like: nothing beats the smallest step
    tie = probe_learning_rates(list(flat), lambda rate: current.append(flat[rate]) or 1.0, score, lambda: None, 5)
    assert tie.chosen == 2e-5  # a tie goes to the rate that disturbs the base model less
    close = {2e-5: 0.5399, 5e-5: 0.5570, 1e-4: 0.5585}  # climate-fever dev after 20 steps
    near = probe_learning_rates(list(close), lambda rate: current.append(close[rate]) or 1.0, score, lambda: None, 5)
    assert near.chosen == 5e-5  # 1e-4 leads by less than the margin: the smaller step wins

    late = probe_learning_rates(rates, train_at, score, lambda: None, 5, deadline=time.time() - 1)
    assert [item["lr"] for item in late.candidates] == [2e-5] and late.chosen == 2e-5  # the budget is spent


def test_probe_length_is_a_share_of_an_epoch() -> None:
    assert [probe_steps(n) for n in (7, 54, 400)] == [7, 20, 100]
    assert probe_steps(54, given=80) == 54


def test_stopping_rule_halves_the_step_then_stops_and_keeps_the_best(tiny_model_dir: Path) -> None:
    model = load(tiny_model_dir, device="cpu")
    # base 0.30, then better, a stall (halve), a new best, two stalls in a row (stop)
    selection = PlantedSelection([0.30, 0.40, 0.38, 0.45, 0.44, 0.43, 0.99], patience=2, decay=0.5)
    callback = KeepBestEpoch(model, selection)
    scheduler = schedule(model)
    control = drive(callback, epochs=30, scheduler=scheduler)

    assert control.should_training_stop and selection.stopped_by == "patience"
    assert [point["epoch"] for point in selection.curve] == [0, 1, 2, 3, 4, 5]
    assert selection.best_epoch == 3 and selection.planted == [0.99]  # the sixth epoch never ran
    # Each point records the rate its epoch trained at: epoch 2 stalled, so epoch 3 ran at half; epoch 4
    # stalled, so epoch 5 ran at a quarter, and its stall was the second in a row.
    rates = [point["lr"] for point in selection.curve[1:]]
    assert rates == pytest.approx([1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5])


def test_a_stalled_epoch_goes_back_to_the_best_weights(tiny_model_dir: Path) -> None:
    model = load(tiny_model_dir, device="cpu")
    selection = PlantedSelection([0.30, 0.40, 0.35], patience=3, decay=0.5)
    callback = KeepBestEpoch(model, selection)
    args = TrainingArguments(output_dir="unused", num_train_epochs=5, report_to="none")
    state, control, scheduler = TrainerState(), TrainerControl(), schedule(model)
    callback.on_train_begin(args, state, control)
    weights = next(iter(model.parameters()))
    kept = []
    for epoch in (1, 2):
        with torch.no_grad():
            weights.add_(0.01)  # what an epoch of training would do
        kept.append(weights.detach().clone())
        state.epoch = float(epoch)
        callback.on_epoch_end(args, state, control, optimizer=scheduler.optimizer, lr_scheduler=scheduler)
    assert selection.best_epoch == 1 and not control.should_training_stop
    torch.testing.assert_close(weights.detach(), kept[0])  # epoch 2 stalled: back to epoch 1's weights
    assert scheduler.base_lrs == pytest.approx([5e-5])


def test_a_curve_that_keeps_rising_runs_to_the_ceiling(tiny_model_dir: Path) -> None:
    model = load(tiny_model_dir, device="cpu")
    selection = PlantedSelection([0.1, 0.2, 0.3, 0.4], patience=2, decay=0.5)
    control = drive(KeepBestEpoch(model, selection), epochs=3, scheduler=schedule(model))
    assert not control.should_training_stop and selection.stopped_by == "ceiling" and selection.best_epoch == 3


def test_a_spent_time_budget_stops_at_the_next_step(tiny_model_dir: Path) -> None:
    model = load(tiny_model_dir, device="cpu")
    selection = PlantedSelection([0.5, 0.6], patience=2, decay=0.5, deadline=time.time() - 1)
    control = drive(KeepBestEpoch(model, selection), epochs=30, scheduler=schedule(model), steps_per_epoch=5)
    assert control.should_training_stop and selection.stopped_by == "budget"
    assert [point["epoch"] for point in selection.curve] == [0, 1] and selection.best_epoch == 1


def test_pipeline_time_budget_publishes_the_best_weights_so_far(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, output = pairs_file(tmp_path / "pairs.tsv", 48), tmp_path / "run"
    args = ["pipeline", "--data", str(data), "--output", str(output), "--base-model", str(tiny_model_dir)]
    args += ["--device", "cpu", "--batch-size", "8", "--quantize", "none", "--time-budget", "1s"]
    assert main(args) == 0
    printed = capsys.readouterr().out  # no gate, and 4 held-out questions: the summary says both
    assert "\nno gates set: nothing was required of the models" in printed
    assert "\nwarning: the evaluation has only 4 queries, so one query is worth 25.00 points of hit@1" in printed
    document = json.loads((output / "pipeline.json").read_text())
    selection = document["stages"]["finetune"]["result"]["selection"]
    assert selection["stopped_by"] == "budget" and selection["best_epoch"] == 0
    assert selection["probe"]["chosen_lr"] in (2e-5, 5e-5, 1e-4)
    texts = ["how do I fix login problem number 5"]
    published = load(output / "finetuned", device="cpu").encode(texts)
    np.testing.assert_allclose(published, load(tiny_model_dir, device="cpu").encode(texts), atol=1e-6)
    report = (output / "report.md").read_text()
    assert "the time budget would have been exceeded" in report
    assert "**No gates set**" in report and "**Passed**" not in report
    assert "**Small evaluation set**: the evaluation has only 4 queries" in report
    assert document["config"]["time_budget"] == "1s" and "--time-budget 1s" in document["commands"]["reproduce"]


@pytest.mark.parametrize("text", ["45", "soon", "0m", ""])
def test_a_budget_without_a_unit_is_refused(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = pairs_file(tmp_path / "pairs.tsv", 8)
    assert main(["pipeline", "--data", str(data), "--output", str(tmp_path / "run"), "--time-budget", text]) == 2
    assert "--time-budget" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_durations_read_as_people_write_them() -> None:
    assert [parse_duration(text) for text in ("45m", "2h", "1h30m", "900s", "1.5h")] == [2700, 7200, 5400, 900, 5400]


def test_validation_corpus_is_capped_but_keeps_every_relevant_document(tmp_path: Path) -> None:
    task = RetrievalTask("t", "beir", ["a", "b"], [f"d{i}" for i in range(50)], [np.array([3, 40]), np.array([7])])
    capped = cap_documents(task, 10, seed=0)
    assert len(capped.documents) == 10 and capped.queries == task.queries
    assert [[capped.documents[i] for i in ids] for ids in capped.relevant] == [["d3", "d40"], ["d7"]]
    assert cap_documents(task, 100, seed=0) is task
    triples = load_triples(pairs_file(tmp_path / "v.tsv", 30))
    assert cap_documents(triples, 10, seed=0).documents == triples.documents  # pairs: every positive is a query's


def run_until(command: list[str], directory: Path, pattern: str, cwd: Path) -> None:
    """Start `command`, SIGKILL it as soon as a file matching `pattern` exists under `directory`."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    deadline = time.monotonic() + 300
    while not any(directory.glob(pattern)) and time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended before {pattern} was written"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_a_killed_pipeline_continues_mid_probe_and_mid_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    data, output = pairs_file(tmp_path / "pairs.tsv", 96), tmp_path / "run"
    command = [sys.executable, "-m", "embedops", "pipeline", "--data", str(data), "--output", str(output)]
    command += ["--base-model", str(tiny_model_dir), "--device", "cpu", "--batch-size", "2", "--epochs", "3"]
    command += ["--quantize", "none", "--patience", "3"]
    work = work_dir_for(output / "finetuned")

    run_until(command, work, "probe.json", tmp_path)  # killed after the first probed rate
    assert len(json.loads((work / "probe.json").read_text())["candidates"]) < 3
    run_until(command, work, "checkpoints/checkpoint-*/trainer_state.json", tmp_path)  # after the first epoch
    assert not (output / "finetuned").exists()

    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "continuing the interrupted run" in result.stderr and "kept from the interrupted run" in result.stderr
    document = json.loads((output / "pipeline.json").read_text())
    selection = document["stages"]["finetune"]["result"]["selection"]
    assert [point["epoch"] for point in selection["curve"]] == [0, 1, 2, 3]
    assert len(selection["probe"]["candidates"]) == 3 and not work.exists()


@pytest.mark.slow
def test_max_forgetting_stops_a_model_that_lost_general_ability(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, output = pairs_file(tmp_path / "pairs.tsv", 48), tmp_path / "run"
    args = ["pipeline", "--data", str(data), "--output", str(output), "--base-model", str(tiny_model_dir)]
    # An absurd step with nothing to stop it wrecks the model: its general-domain similarity collapses.
    args += ["--device", "cpu", "--batch-size", "8", "--quantize", "none", "--lr", "5", "--patience", "0"]
    assert main([*args, "--max-forgetting", "100"]) == 0
    forgetting = json.loads((output / "pipeline.json").read_text())["forgetting"]
    assert forgetting["passed"] and forgetting["change_points"] < -1, forgetting
    assert "## General ability" in (output / "report.md").read_text()
    capsys.readouterr()

    assert main([*args, "--max-forgetting", "1"]) == 1  # the same models, reused, against a tighter limit
    printed = capsys.readouterr().err
    errors = [line for line in printed.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: forgetting: general-domain similarity fell")
    assert "Traceback" not in printed
    document = json.loads((output / "pipeline.json").read_text())
    assert document["status"] == "failed" and document["forgetting"]["passed"] is False
    assert "general-finetuned" in document["stages"] and "BROKEN" in (output / "report.md").read_text()
