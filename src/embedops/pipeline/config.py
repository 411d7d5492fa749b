"""`PipelineConfig`: what `embedops pipeline` was asked to do, checked before any stage runs."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from embedops.errors import ConfigError, DataError
from embedops.models import DEFAULT_MODEL
from embedops.pipeline.gates import Gate, parse_gate
from embedops.pipeline.recipe import Recipe

QUANTIZE_CHOICES = ("int8", "int4", "none")


@dataclass
class PipelineConfig:
    """One pipeline run. Recipe values left as None (epochs, batch size, lr, mining, patience) are chosen
    from the data (pipeline.recipe)."""

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
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    mine_negatives: int | None = None
    patience: int | None = None
    seed: int = 42
    device: str | None = None
    parsed_gates: list[Gate] = field(init=False, repr=False)

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
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.parsed_gates = [parse_gate(text) for text in self.gates]  # a typo fails before training

    def to_record(self) -> dict:
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
        args += ["--lr", f"{recipe.lr:g}", "--mine-negatives", str(recipe.mine_negatives)]
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
        return shlex.join(args)
