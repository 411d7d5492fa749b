"""Checkpoints an interrupted run can continue from, and the clock that makes its time the whole run's.

The trainer writes a checkpoint's files in place, one after another, and `trainer_state.json` last:
a kill while it saves leaves a directory without that file (or with half of it), from which the
trainer cannot resume. `latest_complete` passes over such directories, so `--resume` continues from
the newest checkpoint that was written to the end.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from embedops.files import write_text_atomically

logger = logging.getLogger(__name__)
_CLOCK = "clock.json"
_WEIGHTS = ("model.safetensors", "adapter_model.safetensors")


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def _incomplete(checkpoint: Path) -> str | None:
    """What a checkpoint lacks to be resumed from, or None when it is whole."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "trainer_state.json is cut short"
    if not any((checkpoint / name).is_file() for name in _WEIGHTS):
        return "no model weights"
    missing = [name for name in ("optimizer.pt", "scheduler.pt") if not (checkpoint / name).is_file()]
    return f"no {', '.join(missing)}" if missing else None


def latest_complete(directory: Path) -> Path | None:
    """The newest whole checkpoint in `directory`; incomplete ones are removed, each with a message."""
    candidates = [
        path for path in directory.glob("checkpoint-*") if path.is_dir() and path.name.rsplit("-", 1)[1].isdigit()
    ]
    for checkpoint in sorted(candidates, key=_step, reverse=True):
        problem = _incomplete(checkpoint)
        if problem is None:
            return checkpoint
        logger.warning("skipping %s: %s (the run was stopped while it was being written)", checkpoint.name, problem)
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None


class RunClock(TrainerCallback):
    """Training seconds across interruptions. Each checkpoint's save records the seconds behind it, so
    a run resumed from step N starts its count from what step N had cost, not from zero. Under several
    processes only rank 0 `writes` the file."""

    def __init__(self, work: Path, resumed_from: Path | None, *, writes: bool = True) -> None:
        self.path, self.writes = work / _CLOCK, writes
        self.saved: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        steps = self.saved.setdefault("steps", {})
        self.before = float(steps.get(str(_step(resumed_from)), 0.0)) if resumed_from is not None else 0.0
        self.segments = int(self.saved.get("segments", 0)) + 1
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.started

    def probe_seconds(self, measured: float) -> float:
        """The probe's seconds: those of the segment that ran it, kept when a resumed run skips it."""
        self.saved.setdefault("probe", measured)
        self._write()
        return float(self.saved["probe"])

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.saved["steps"][str(state.global_step)] = round(self.seconds, 3)
        self._write()

    def _write(self) -> None:
        if self.writes:
            write_text_atomically(self.path, json.dumps(self.saved | {"segments": self.segments}))
