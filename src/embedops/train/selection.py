"""Early stopping that keeps the best epoch: score the model on validation data before training and after
every epoch, hold on to the weights of the best score, and stop once `patience` epochs in a row did not
beat it.

Small domain sets overfit after a few passes and large ones may need only one, so a fixed epoch count is
either too short or too long; scoring each epoch on data the model does not train on decides instead.
The score before training (epoch 0) is a candidate too: when no epoch beats the base model on validation
data, the published weights are the base model's and the manifest says so, rather than shipping a model
that measured worse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from transformers import TrainerCallback

from embedops.evaluate.datasets import Task
from embedops.evaluate.scoring import score

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


@dataclass
class EpochSelection:
    """What to score after each epoch: `task` (validation data, never the test set) and its `metric`."""

    task: Task
    metric: str
    source: str  # where the validation data came from, for the manifest and the report
    patience: int = 2  # stop after this many epochs without a new best; 0 runs every epoch
    batch_size: int = 32
    curve: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False

    def to_record(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "source": self.source,
            "patience": self.patience,
            "curve": self.curve,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
        }


class _ModelEncoder:
    """The model being trained, seen through the evaluator's Encoder interface."""

    name = "model in training"

    def __init__(self, model: SentenceTransformer) -> None:
        self.model = model

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)


class KeepBestEpoch(TrainerCallback):
    """Trainer callback: score at each epoch's end, snapshot the best weights, stop when patience runs out."""

    def __init__(self, model: SentenceTransformer, selection: EpochSelection) -> None:
        self.model, self.selection = model, selection
        self.best_score = self._score()
        self.best_state = self._snapshot()  # the weights before training, until an epoch beats them
        selection.curve.append({"epoch": 0, selection.metric: self.best_score})
        print(f"validation {selection.metric} before training: {self.best_score:.4f}")
        self._epochs_without_gain = 0

    def _score(self) -> float:
        selection = self.selection
        scores = score(
            selection.task, _ModelEncoder(self.model), metrics=[selection.metric], batch_size=selection.batch_size
        )
        return scores[selection.metric]

    def _snapshot(self) -> dict[str, Any]:
        return {name: value.detach().to("cpu", copy=True) for name, value in self.model.state_dict().items()}

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        selection = self.selection
        epoch = round(state.epoch or len(selection.curve))
        value = self._score()
        selection.curve.append({"epoch": epoch, selection.metric: value})
        improved = value > self.best_score
        print(f"validation {selection.metric} after epoch {epoch}: {value:.4f}" + (" (best)" if improved else ""))
        if improved:
            self.best_score, self.best_state, selection.best_epoch = value, self._snapshot(), epoch
            self._epochs_without_gain = 0
            return
        self._epochs_without_gain += 1
        if selection.patience and self._epochs_without_gain >= selection.patience:
            selection.stopped_early = state.epoch < args.num_train_epochs
            control.should_training_stop = True

    def restore_best(self) -> None:
        """Load the best epoch's weights (those from before training when no epoch beat them) into the model."""
        self.model.load_state_dict(self.best_state)
