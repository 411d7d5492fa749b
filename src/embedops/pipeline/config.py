"""`PipelineConfig`: what `embedops pipeline` was asked to do, checked before any stage runs."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from embedops.configs import FromFlags
from embedops.errors import ConfigError, DataError
from embedops.evaluate.gate import Gate, parse_gate
from embedops.models import DEFAULT_MODEL
from embedops.pipeline.recipe import Recipe
from embedops.pipeline.state import ConfigRecord

QUANTIZE_CHOICES = ("int8", "int4", "none")
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> float:
    """Seconds in '45m', '2h', '1h30m', '900s'; a unit is required (a bare 45 could mean either)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise ConfigError(f"--time-budget {text!r}: give a duration with a unit, such as 45m, 2h, 1h30m or 900s")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ConfigError(f"--time-budget {text!r} must be longer than zero")
    return total


@dataclass
class PipelineConfig(FromFlags):
    """One pipeline run. Recipe values left as None (epochs, batch size, lr, mining, patience) are chosen
    from the data (pipeline.recipe); `embedops pipeline` fills it with `from_flags`."""

    data: Path
    output: Path
    base_model: str = DEFAULT_MODEL
    eval_data: Path | None = None
    eval_split: str = "test"
    eval_fraction: float = 0.1
    validation_fraction: float = 0.1
    use_lora: bool = False
    quantize: str = "int8"
    gates: list[str] = field(default_factory=list)
    max_drift: float | None = None
    max_forgetting: float | None = None  # points of general-domain Spearman the tuned model may lose
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    mine_negatives: int | None = None
    patience: int | None = None
    time_budget: str | None = None  # e.g. "45m": the whole run; the best model found within it is published
    seed: int = 42
    device: str | None = None
    ddp_timeout: int = 1800  # seconds one collective of a training step may wait under several processes
    parsed_gates: list[Gate] = field(init=False, repr=False)
    budget_seconds: float | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.data, self.output = Path(self.data), Path(self.output)
        self.eval_data = Path(self.eval_data) if self.eval_data is not None else None
        if not self.data.is_file():
            raise DataError(self.data, 0, "no such file; --data takes a pairs/triplets file (.tsv, .csv, .jsonl)")
        if self.eval_data is not None and not self.eval_data.exists():
            raise DataError(self.eval_data, 0, "no such file or directory")
        if self.output.is_file():
            raise ConfigError(f"--output {self.output} is a file; the pipeline writes a directory")
        checks = [
            (self.quantize in QUANTIZE_CHOICES, f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}"),
            (0 < self.eval_fraction <= 0.5, f"--eval-fraction must be in (0, 0.5], got {self.eval_fraction}"),
            (self.max_drift is None or 0 <= self.max_drift <= 1, "--max-drift must be between 0 and 1"),
            (
                self.max_forgetting is None or self.max_forgetting >= 0,
                f"--max-forgetting takes points of Spearman x100 that may be lost (>= 0), got {self.max_forgetting}",
            ),
            (self.epochs is None or self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size is None or self.batch_size >= 2, "--batch-size must be at least 2 (in-batch negatives)"),
            (self.lr is None or self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (
                0 < self.validation_fraction <= 0.5,
                f"--validation-fraction must be in (0, 0.5], got {self.validation_fraction}",
            ),
            (
                self.mine_negatives is None or 0 <= self.mine_negatives <= 10,
                f"--mine-negatives must be 0..10, got {self.mine_negatives}",
            ),
            (self.patience is None or self.patience >= 0, f"--patience must not be negative, got {self.patience}"),
            (self.ddp_timeout >= 1, f"--ddp-timeout must be at least 1 second, got {self.ddp_timeout}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.parsed_gates = [parse_gate(text) for text in self.gates]  # a typo fails before training
        self.budget_seconds = parse_duration(self.time_budget) if self.time_budget is not None else None

    def to_record(self) -> ConfigRecord:
        return {
            "data": str(self.data.absolute()),
            "output": str(self.output.absolute()),
            "base_model": self.base_model,
            "eval_data": str(self.eval_data.absolute()) if self.eval_data else None,
            "eval_split": self.eval_split,
            "eval_fraction": self.eval_fraction,
            "validation_fraction": self.validation_fraction,
            "use_lora": self.use_lora,
            "quantize": self.quantize,
            "gates": list(self.gates),
            "max_drift": self.max_drift,
            "max_forgetting": self.max_forgetting,
            "time_budget": self.time_budget,
            "seed": self.seed,
            "device": self.device,
        }

    def command(self, recipe: Recipe) -> str:
        """The command that repeats this run exactly, with the recipe written out so it cannot drift."""
        base = self.base_model
        if Path(base).expanduser().is_dir():
            base = str(Path(base).expanduser().absolute())
        args = ["embedops", "pipeline", "--data", str(self.data.absolute()), "--output", str(self.output.absolute())]
        args += ["--base-model", base, "--epochs", str(recipe.epochs), "--batch-size", str(recipe.batch_size)]
        if recipe.lr is not None:  # otherwise the probe runs again, with the same seed and the same outcome
            args += ["--lr", f"{recipe.lr:g}"]
        args += ["--mine-negatives", str(recipe.mine_negatives)]
        args += ["--patience", str(recipe.patience), "--validation-fraction", f"{self.validation_fraction:g}"]
        if self.eval_data is not None:
            args += ["--eval-data", str(self.eval_data.absolute()), "--eval-split", self.eval_split]
        else:
            args += ["--eval-fraction", f"{self.eval_fraction:g}"]
        if self.use_lora:
            args.append("--use-lora")
        args += ["--quantize", self.quantize, "--seed", str(self.seed)]
        if self.device:
            args += ["--device", self.device]
        for gate in self.gates:
            args += ["--gate", gate]
        if self.max_drift is not None:
            args += ["--max-drift", f"{self.max_drift:g}"]
        if self.max_forgetting is not None:
            args += ["--max-forgetting", f"{self.max_forgetting:g}"]
        if self.time_budget:
            args += ["--time-budget", self.time_budget]
        return shlex.join(args)
