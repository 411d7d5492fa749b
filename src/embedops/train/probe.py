"""The learning-rate probe: train a short, equal stretch from the base weights at each candidate rate,
score each on the validation data, and run the real training at the best one.

Why a probe and not a table keyed on data size: the right step depends on how far the data is from
what the base model already knows, which no count of pairs tells. On WikiQA (questions the base model
has seen the like of) 5e-5 lowered dev nDCG@10 after one epoch while 2e-5 raised it; on a domain-shift
set (claims -> paper abstracts) 5e-5 and 1e-4 gained many points more than 2e-5 over the same epochs
(bench/RESULTS.md). Both show within the first few dozen steps, so the probe costs a fraction of an
epoch per candidate. Every candidate starts from the same weights and sees the same batches, so the
scores differ by the rate alone. Results are kept in the run's work directory after each candidate:
a run interrupted mid-probe continues with the candidates it had not finished.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedops.files import write_text_atomically
from embedops.train.distributed import current_world, deadline_passed, on_main

logger = logging.getLogger(__name__)

# Candidates for full fine-tuning; LoRA multiplies them by its own factor (train.config.DEFAULT_LR).
FULL_CANDIDATES = (2e-5, 5e-5, 1e-4)
# Probe length: a quarter of an epoch, at least this many steps, never more than one epoch.
MIN_PROBE_STEPS = 20
PROBE_MARGIN = 0.005  # half a point of the validation metric (x100)
_RESULTS_FILE = "probe.json"


def probe_steps(steps_per_epoch: int, given: int | None = None) -> int:
    """How many optimizer steps each candidate trains for."""
    if given is not None:
        return max(1, min(given, steps_per_epoch))
    return min(steps_per_epoch, max(MIN_PROBE_STEPS, steps_per_epoch // 4))


@dataclass
class ProbeOutcome:
    chosen: float
    base_score: float
    candidates: list[dict[str, float]]
    steps: int
    seconds_per_step: float

    def to_record(self) -> dict[str, Any]:
        return {
            "chosen_lr": self.chosen,
            "base_score": self.base_score,
            "steps": self.steps,
            "seconds_per_step": round(self.seconds_per_step, 3),
            "candidates": self.candidates,
        }


def choose(candidates: Sequence[dict[str, float]]) -> float:
    """The smallest rate that scores within PROBE_MARGIN of the best: a larger step must clearly win.

    On climate-fever dev, 1e-4 led 5e-5 by 0.15 points after the probe's 20 steps and then lost 9.6 points
    in its second epoch; a short probe cannot separate rates that close, and the smaller disturbs the
    base model less."""
    best = max(item["score"] for item in candidates)
    return min(item["lr"] for item in candidates if item["score"] >= best - PROBE_MARGIN)


def probe_learning_rates(
    rates: Sequence[float],
    train_at: Callable[[float], float],
    score: Callable[[], float],
    reset: Callable[[], None],
    steps: int,
    *,
    work: Path | None = None,
    deadline: float | None = None,
) -> ProbeOutcome:
    """Score the base weights, then for each rate: `reset()` to them, `train_at(rate)` (returns its training
    seconds) and `score()`. Ends with the base weights restored. `work` keeps finished candidates for --resume;
    past `deadline` (time.time()) no further rate is tried, and the best of those tried wins. Under several
    processes every one runs this with the same scores (rank 0's, shared by `score`); rank 0 writes."""
    path = work / _RESULTS_FILE if work is not None else None
    # Rank 0's reading, so that every process skips the same finished candidates.
    saved: dict[str, Any] = on_main(
        current_world(),
        lambda: json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else {},
    )
    base_score = float(saved["base_score"]) if "base_score" in saved else score()
    done = {float(item["lr"]): item for item in saved.get("candidates", [])}
    results: list[dict[str, float]] = []
    for rate in rates:
        if results and deadline_passed(deadline):
            logger.info("probe: time budget reached; %g and the rates after it are left untried", rate)
            break
        if rate in done:
            logger.info("probe lr %g: %.4f (kept from the interrupted run)", rate, done[rate]["score"])
            results.append(done[rate])
            continue
        reset()
        seconds = train_at(rate)
        value = score()
        results.append({"lr": rate, "score": value, "seconds": round(seconds, 1)})
        logger.info("probe lr %g: validation %.4f after %d steps (%.0f s)", rate, value, steps, seconds)
        if path is not None and current_world().is_main:
            write_text_atomically(path, json.dumps({"base_score": base_score, "candidates": results}))
    reset()
    trained = [item for item in results if item.get("seconds")]
    per_step = sum(item["seconds"] for item in trained) / (steps * len(trained)) if trained else 0.0
    chosen = choose(results)
    logger.info("probe: learning rate %g chosen (base %.4f)", chosen, base_score)
    return ProbeOutcome(chosen, base_score, results, steps, per_step)


def estimate_line(outcome: ProbeOutcome, steps_per_epoch: int, validation_seconds: float, ceiling: int) -> str:
    """What one epoch and the whole ceiling cost on this machine, from the probe's own timing."""
    epoch = outcome.seconds_per_step * steps_per_epoch + validation_seconds
    return (
        f"estimate on this machine: {epoch:.0f} s per epoch ({steps_per_epoch} steps at "
        f"{outcome.seconds_per_step:.2f} s + {validation_seconds:.0f} s validation); the ceiling of {ceiling} "
        f"epochs would take {epoch * ceiling / 60:.0f} min, early stopping usually ends sooner"
    )
