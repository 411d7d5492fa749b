"""`evaluate(config)`: score one dataset with several models, baseline first, and record the results.

Everything that can be wrong with the input (data, model references, gate flags) is checked before
the first model is loaded, so a typo costs seconds, not an encoded corpus.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedops.artifact import read_manifest, write_manifest
from embedops.configs import FromFlags
from embedops.errors import ConfigError
from embedops.evaluate.datasets import RetrievalTask, Task, load_task
from embedops.evaluate.encoders import Encoder, open_encoder
from embedops.evaluate.gate import enforce, make_gates
from embedops.evaluate.scoring import check_metrics, default_metrics, score

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig(FromFlags):
    """What `embedops eval` was asked to do; the CLI fills it with `from_flags`."""

    models: list[str]
    data: Path
    split: str = "test"
    task: str = "auto"
    ks: list[int] | None = None
    batch_size: int = 32
    max_queries: int | None = None
    seed: int = 0
    fail_below: list[str] = field(default_factory=list)
    max_drop: list[str] = field(default_factory=list)
    device: str | None = None


@dataclass
class ModelResult:
    name: str
    metrics: dict[str, float]
    seconds: float  # encoding and scoring, after the model is loaded
    artifact_dir: Path | None = None


@dataclass
class EvalResult:
    """Scores of every model on one dataset, baseline first."""

    dataset: str
    kind: str
    size: dict[str, int]
    metrics: list[str]
    models: list[ModelResult]

    def to_dict(self) -> dict[str, Any]:
        baseline = self.models[0].metrics
        return {
            "dataset": self.dataset,
            "kind": self.kind,
            "size": self.size,
            "metrics": self.metrics,
            "baseline": self.models[0].name,
            "models": [
                {
                    "name": model.name,
                    "metrics": model.metrics,
                    "delta_points": {m: (model.metrics[m] - baseline[m]) * 100 for m in self.metrics},
                    "seconds": round(model.seconds, 2),
                }
                for model in self.models
            ],
        }


def _size(task: Task) -> dict[str, int]:
    if isinstance(task, RetrievalTask):
        return {"queries": len(task.queries), "documents": len(task.documents)}
    return {"pairs": len(task.gold)}


def prepare(config: EvalConfig) -> tuple[Task, list[str], list[Encoder]]:
    """Read the data, fix the metric list, parse the gates and resolve every model: all fail fast."""
    if not config.models:
        raise ConfigError("pass at least one --model")
    if config.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if config.ks is not None and (not config.ks or min(config.ks) < 1):
        raise ConfigError("--k takes positive cut-offs, e.g. --k 1,5,10")
    gates = make_gates(config.fail_below, config.max_drop, models=len(config.models))
    task = load_task(
        config.data, task=config.task, split=config.split, max_queries=config.max_queries, seed=config.seed
    )
    metrics = list(dict.fromkeys([*default_metrics(task, config.ks), *gates.metrics]))
    check_metrics(task, metrics)
    encoders = [open_encoder(reference, device=config.device) for reference in config.models]
    return task, metrics, encoders


def evaluate(config: EvalConfig) -> EvalResult:
    """Score every model on the dataset; the gates are checked separately (`check_gates`)."""
    task, metrics, encoders = prepare(config)
    size = ", ".join(f"{v} {k}" for k, v in _size(task).items())
    logger.info("evaluating %d model(s) on %s (%s: %s)", len(encoders), task.name, task.kind, size)
    results = []
    for encoder in encoders:
        load = getattr(encoder, "load", None)
        if load:
            load()
        started = time.perf_counter()
        scores = score(task, encoder, metrics=metrics, batch_size=config.batch_size)
        seconds = time.perf_counter() - started
        close = getattr(encoder, "close", None)
        if close:
            close()
        results.append(ModelResult(encoder.name, scores, seconds, getattr(encoder, "artifact_dir", None)))
        logger.info("  %s: %.1f s", encoder.name, seconds)
    return EvalResult(task.name, task.kind, _size(task), metrics, results)


def check_gates(result: EvalResult, config: EvalConfig) -> None:
    """Raise GateFailedError when a `--fail-below` or `--max-drop` threshold is broken."""
    gates = make_gates(config.fail_below, config.max_drop, models=len(result.models))
    enforce([(model.name, model.metrics) for model in result.models], gates)


def record(result: EvalResult) -> list[Path]:
    """Write each artifact model's scores into its manifest's `eval` block, keyed by dataset."""
    written = []
    for model in result.models:
        if model.artifact_dir is None:
            continue
        manifest = read_manifest(model.artifact_dir)
        if manifest is None:
            continue
        manifest.eval[result.dataset] = {**model.metrics, **result.size}
        write_manifest(model.artifact_dir, manifest)
        written.append(model.artifact_dir)
    return written
