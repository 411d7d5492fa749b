"""The trainer as embedops runs it: one labeled progress bar, and nothing else printed.

transformers' ProgressCallback draws an unlabeled bar and writes each log entry under it as a raw dict
(`{'loss': ..., 'grad_norm': ...}`), redrawing the bar after every one; its PrinterCallback (what
`disable_tqdm` gets) prints the dicts alone; sentence-transformers' model-card callback adds a bar of its
own while it picks widget examples. `Trainer` runs with `disable_tqdm`, without the printer and without
the model-card callback (embedops writes its own card, train.records), and draws one `TrainingProgress`
bar: the epoch as its label, the latest loss and the time left beside it. embedops' own log lines during
training (validation after an epoch) are written above the bar, not through it.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from sentence_transformers import SentenceTransformerTrainer
from transformers import PrinterCallback, TrainerCallback

BAR_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed} elapsed, {remaining} left{postfix}]"
)


class TrainingProgress(TrainerCallback):
    """The bar of one training run, drawn by the main process only (the others train in silence)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        from tqdm.auto import tqdm

        self.step = state.global_step  # a resumed run starts part of the way along
        self.bar = tqdm(
            total=state.max_steps,
            initial=state.global_step,
            desc=_label(state),
            bar_format=BAR_FORMAT,
            dynamic_ncols=True,
        )

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.set_description_str(_label(state))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.step)
            self.step = state.global_step

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix_str(f"loss {logs['loss']:.4f}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _label(state: Any) -> str:
    """'epoch N/M' for the epoch under way (state.epoch counts the finished ones, fractions included)."""
    epochs = state.num_train_epochs
    return f"epoch {min(int(state.epoch or 0) + 1, epochs)}/{epochs}"


class Trainer(SentenceTransformerTrainer):
    """SentenceTransformerTrainer (given `disable_tqdm`) that prints no log dicts and, with `progress`,
    trains under one TrainingProgress bar, closed even when training fails."""

    def __init__(self, *args: Any, progress: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.remove_callback(PrinterCallback)
        self.progress = progress

    def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
        """None: artifacts are saved with create_model_card=False, so what it gathers would go unused."""
        del default_args_dict

    def train(self, *args: Any, **kwargs: Any) -> Any:
        if not self.progress:
            return super().train(*args, **kwargs)
        from tqdm.contrib.logging import logging_redirect_tqdm

        bar = TrainingProgress()
        self.add_callback(bar)
        try:
            with logging_redirect_tqdm(loggers=[logging.getLogger("embedops")]), warnings.catch_warnings():
                # Raised when two checkpoints are saved within a second (short epochs); the trainer then
                # orders them by step number, the order they have anyway.
                warnings.filterwarnings("ignore", "mtime may not be reliable", UserWarning)
                return super().train(*args, **kwargs)
        finally:
            bar.close()
            self.remove_callback(bar)
