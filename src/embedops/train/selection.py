"""Training length decided by validation: score the model on validation data before training and after
every epoch, keep the weights of the best score, go back to them at half the learning rate when an epoch
brings no gain, and stop once `patience` epochs in a row did not beat the best, or when the time budget would be spent.

Small domain sets need many passes and large ones may need only one, so a fixed epoch count is either too
short or too long; scoring each epoch on data the model does not train on decides instead, and the epoch
count becomes a generous ceiling. A schedule that decays to zero at that ceiling would freeze a run long
before it converges, so the pipeline trains at a constant rate after warm-up and lets validation decay
it: a stalled epoch sends training back to the best weights at half the step, which lets a run that has
overshot settle into its optimum instead of carrying on from where it overshot.
The score before training (epoch 0) is a candidate too: when no epoch beats the base model on validation
data, the published weights are the base model's and the manifest says so.

The callback stands on transformers' TrainerCallback rather than its EarlyStoppingCallback, which only
counts evaluations without a gain and sets `should_training_stop`: it cannot send training back to the best
weights at a smaller step after a stall, stop at a wall-clock deadline, or end on the base model (epoch 0,
never a trainer checkpoint), and the best weights it ends with come from `load_best_model_at_end`, which
needs the save strategy to match the evaluation strategy (a full checkpoint on disk per evaluation, read
back at the end). This keeps the best weights in memory, scores with embedops' retrieval metrics, and
survives --resume through a small state file and one best.safetensors in the run's work directory.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from transformers import TrainerCallback

from embedops.evaluate.datasets import Task
from embedops.evaluate.scoring import score
from embedops.files import atomic_path, write_text_atomically
from embedops.train.distributed import current_world, deadline_passed, on_main

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

# What ended training, as the manifest and the report name it.
STOPPED_BY_PATIENCE, STOPPED_BY_CEILING, STOPPED_BY_BUDGET = "patience", "ceiling", "budget"
_STATE_FILE, _BEST_WEIGHTS = "selection.json", "best.safetensors"


@dataclass
class EpochSelection:
    """What to score after each epoch: `task` (validation data, never the test set) and its `metric`.

    `decay` multiplies the learning rate after an epoch without a new best (None: the schedule alone
    sets it); `deadline` is a wall-clock time (time.time()) by which training must have stopped.
    """

    task: Task
    metric: str
    source: str  # where the validation data came from, for the manifest and the report
    patience: int = 2  # stop after this many epochs without a new best; 0 runs every epoch
    batch_size: int = 32
    decay: float | None = None
    deadline: float | None = None
    curve: list[dict[str, float]] = field(default_factory=list)
    best_epoch: float = 0  # whole epochs are ints; a stretch cut short by the time budget is fractional (1.4)
    stopped_by: str = STOPPED_BY_CEILING
    probe: dict[str, Any] | None = None  # the learning-rate probe's record (train.probe), when one ran
    validation_seconds: list[float] = field(default_factory=list)

    @property
    def stopped_early(self) -> bool:
        return self.stopped_by != STOPPED_BY_CEILING

    def score(self, model: SentenceTransformer) -> float:
        """The validation metric of `model` as it is now; the time it took is kept for the estimates.
        Under several processes rank 0 scores its replica (all hold the same weights) and shares the value."""

        def measure() -> float:
            started = time.perf_counter()
            scores = score(self.task, ModelEncoder(model), metrics=[self.metric], batch_size=self.batch_size)
            self.validation_seconds.append(time.perf_counter() - started)
            return scores[self.metric]

        return on_main(current_world(), measure)

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "metric": self.metric,
            "source": self.source,
            "documents": len(self.task.documents) if hasattr(self.task, "documents") else None,
            "patience": self.patience,
            "decay": self.decay,
            "curve": self.curve,
            "best_epoch": self.best_epoch,
            "stopped_by": self.stopped_by,
            "stopped_early": self.stopped_early,
            "validation_seconds": round(float(sum(self.validation_seconds)), 1),
        }
        if self.probe is not None:
            record["probe"] = self.probe
        return record


class ModelEncoder:
    """The model being trained, seen through the evaluator's Encoder interface."""

    name = "model in training"

    def __init__(self, model: SentenceTransformer) -> None:
        self.model = model

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)


def snapshot(model: SentenceTransformer) -> dict[str, Any]:
    """A CPU copy of every weight, to restore later with `model.load_state_dict`."""
    return {name: value.detach().to("cpu", copy=True).contiguous() for name, value in model.state_dict().items()}


def _epoch_number(epoch: float) -> float:
    """Whole epochs as ints; a stretch cut short by the time budget keeps its fraction (1.4)."""
    return round(epoch) if abs(epoch - round(epoch)) < 1e-6 else round(epoch, 2)


def _read_state(state_dir: Path | None) -> dict[str, Any] | None:
    """The curve, best score and stalls saved after the last scored epoch, if a run left them."""
    if state_dir is None or not (state_dir / _STATE_FILE).is_file():
        return None
    return dict(json.loads((state_dir / _STATE_FILE).read_text(encoding="utf-8")))


class KeepBestEpoch(TrainerCallback):
    """Trainer callback: score at each epoch's end, snapshot the best weights, return to them at a smaller
    step when an epoch stalls, stop when patience or the time budget runs out.

    With `state_dir`, the curve and the best weights are written there after every epoch, so a run
    continued with --resume compares against (and can publish) epochs trained before the interruption.
    Under several processes every one runs this callback on its replica: each decision rests on a score or
    a clock reading that rank 0 shares, so all stop, roll back and decay together; rank 0 alone writes.
    """

    def __init__(
        self,
        model: SentenceTransformer,
        selection: EpochSelection,
        state_dir: Path | None = None,
        base_score: float | None = None,
    ) -> None:
        self.model, self.selection, self.state_dir = model, selection, state_dir
        self._epoch_started = time.time()
        self._misses = 0
        self._writes = current_world().is_main
        # Rank 0's reading, so that every process resumes from the same curve.
        saved = on_main(current_world(), lambda: _read_state(state_dir))
        if state_dir is not None and saved is not None:
            self._load_state(state_dir, saved)
            return
        self.best_score = selection.score(model) if base_score is None else base_score
        self.best_state = snapshot(model)  # the weights before training, until an epoch beats them
        selection.curve.append({"epoch": 0, selection.metric: self.best_score})
        logger.info("validation %s before training: %.4f", selection.metric, self.best_score)

    def _load_state(self, state_dir: Path, saved: dict[str, Any]) -> None:
        from safetensors.torch import load_file

        selection = self.selection
        selection.curve, selection.best_epoch = saved["curve"], saved["best_epoch"]
        self.best_score, self._misses = saved["best_score"], saved["misses"]
        self.best_state = load_file(str(state_dir / _BEST_WEIGHTS))
        epochs, best = len(selection.curve) - 1, saved["best_epoch"]
        logger.info("resumed: validation curve of %d epoch(s), best epoch %s", epochs, best)

    def _save_state(self, improved: bool) -> None:
        if self.state_dir is None or not self._writes:
            return
        if improved or not (self.state_dir / _BEST_WEIGHTS).is_file():
            from safetensors.torch import save_file

            with atomic_path(self.state_dir / _BEST_WEIGHTS) as staging:
                save_file(self.best_state, str(staging))
        selection = self.selection
        state = {"curve": selection.curve, "best_epoch": selection.best_epoch, "best_score": self.best_score}
        write_text_atomically(self.state_dir / _STATE_FILE, json.dumps(state | {"misses": self._misses}))

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # A resumed run restarts from its last checkpoint: forget epochs scored after it (they run again).
        done = round(state.epoch or 0)
        self.selection.curve = [point for point in self.selection.curve if point["epoch"] <= done]
        self._epoch_started = time.time()
        if not (self.state_dir is not None and (self.state_dir / _BEST_WEIGHTS).is_file()):
            self._save_state(improved=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if deadline_passed(self.selection.deadline):
            logger.info("time budget spent during epoch %d: stopping", round(state.epoch or 0) + 1)
            self.selection.stopped_by = STOPPED_BY_BUDGET
            control.should_training_stop = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        selection = self.selection
        epoch = _epoch_number(state.epoch or len(selection.curve))
        value = selection.score(self.model)
        optimizer = kwargs.get("optimizer")
        point = {"epoch": epoch, selection.metric: value}
        if optimizer is not None:
            point["lr"] = float(optimizer.param_groups[0]["lr"])
        selection.curve.append(point)
        improved = value > self.best_score
        logger.info(
            "validation %s after epoch %s: %.4f%s", selection.metric, epoch, value, " (best)" if improved else ""
        )
        if improved:
            self.best_score, self.best_state, selection.best_epoch = value, snapshot(self.model), epoch
            self._misses = 0
        else:
            self._misses += 1
            if selection.patience and self._misses >= selection.patience:
                if selection.stopped_by == STOPPED_BY_CEILING:
                    selection.stopped_by = STOPPED_BY_PATIENCE
                control.should_training_stop = True
            elif selection.decay is not None:
                self._roll_back_and_decay(kwargs.get("lr_scheduler"))
        self._save_state(improved)
        now = time.time()
        epoch_seconds, self._epoch_started = now - self._epoch_started, now
        last = epoch >= args.num_train_epochs
        if not (control.should_training_stop or last) and deadline_passed(selection.deadline, epoch_seconds):
            logger.info("time budget: another epoch (about %.0f s) would not fit; stopping", epoch_seconds)
            selection.stopped_by = STOPPED_BY_BUDGET
            control.should_training_stop = True

    def _roll_back_and_decay(self, scheduler: Any) -> None:
        """Continue from the best weights at a smaller step. Without the roll-back an epoch that overshot
        is where the slower epochs start: on climate-fever, full fine-tuning at 1e-4 went from 58.6 dev
        nDCG@10 after epoch 1 to 49.0 after epoch 2. A LambdaLR keeps its rates in `base_lrs`, which
        checkpoints save, so a resumed run keeps the decayed step."""
        self.model.load_state_dict(self.best_state)
        if scheduler is None or not hasattr(scheduler, "base_lrs"):
            return
        factor = self.selection.decay or 1.0
        scheduler.base_lrs = [rate * factor for rate in scheduler.base_lrs]
        logger.info(
            "no gain this epoch: back to epoch %s's weights, learning rate x%g -> %g",
            self.selection.best_epoch,
            factor,
            scheduler.base_lrs[0],
        )

    def restore_best(self) -> None:
        """Load the best epoch's weights (those from before training when no epoch beat them) into the model."""
        self.model.load_state_dict(self.best_state)
