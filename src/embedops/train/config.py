"""The typed configuration of a fine-tuning run; the CLI, Makefile and seed script only fill it in."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from embedops.configs import FromFlags
from embedops.errors import ConfigError
from embedops.models import DEFAULT_MODEL

LOSSES = ("mnrl", "cached-mnrl")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# linear: warm up, then decay to zero at the last epoch (the seed's schedule, right for a fixed length);
# plateau: constant after warm-up, halved by validation when an epoch brings no gain (train.selection).
LR_SCHEDULES = ("linear", "plateau")
# LoRA updates few weights from zero, so it wants a larger step than full fine-tuning.
DEFAULT_LR = {"full": 2e-5, "lora": 2e-4}


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] | None = None  # None: peft's defaults for the architecture


@dataclass
class FinetuneConfig(FromFlags):
    """One fine-tuning run; `embedops finetune` fills it with `from_flags` (--lora-r and the like set `lora`)."""

    data: Path
    output: Path
    base_model: str = DEFAULT_MODEL
    epochs: int = 1
    batch_size: int = 32
    lr: float | None = None
    use_lora: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    max_seq_length: int | None = None
    warmup_ratio: float = 0.1
    seed: int = 42
    loss: str = "mnrl"
    mini_batch_size: int = 32
    save_every: int | None = None
    resume: bool = False
    resume_if_possible: bool = False  # continue an interrupted run of the same key, else start over (pipeline)
    device: str | None = None
    precision: str = "auto"
    eval_sample_size: int = 0
    skip_invalid: bool = False
    force: bool = False
    mine_negatives: int = 0  # > 0: mine this many hard negatives per pair with the base model first
    mine_corpus: Path | None = None  # passages to mine from (default: the positives of the data)
    lr_schedule: str = "linear"
    lr_candidates: list[float] | None = None  # probe these rates on the validation data first (train.probe)
    probe_steps: int | None = None  # steps per probed rate (default: train.probe.probe_steps)
    ddp_timeout: int = 1800  # seconds one collective of a training step may wait under several processes

    def __post_init__(self) -> None:
        self.data, self.output = Path(self.data), Path(self.output)
        self.mine_corpus = Path(self.mine_corpus) if self.mine_corpus else None
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.lr is None or self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (0 <= self.warmup_ratio < 1, f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.loss in LOSSES, f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}"),
            (self.save_every is None or self.save_every >= 1, "--save-every must be at least 1 step"),
            (self.eval_sample_size >= 0, "--eval-sample-size must not be negative"),
            (self.lora.r >= 1, f"--lora-r must be at least 1, got {self.lora.r}"),
            (0 <= self.lora.dropout < 1, f"--lora-dropout must be in [0, 1), got {self.lora.dropout}"),
            (self.max_seq_length is None or self.max_seq_length >= 8, "--max-seq-length must be at least 8"),
            (0 <= self.mine_negatives <= 10, f"--mine-negatives must be 0..10, got {self.mine_negatives}"),
            (self.lr_schedule in LR_SCHEDULES, f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}"),
            (all(rate > 0 for rate in self.lr_candidates or []), "probed learning rates must be positive"),
            (self.probe_steps is None or self.probe_steps >= 1, "--probe-steps must be at least 1"),
            (self.ddp_timeout >= 1, f"--ddp-timeout must be at least 1 second, got {self.ddp_timeout}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR["lora" if self.use_lora else "full"]

    def to_record(self) -> dict:
        record = asdict(self)
        record.update(data=str(self.data), output=str(self.output), lr=self.learning_rate)
        record["mine_corpus"] = str(self.mine_corpus) if self.mine_corpus else None
        return record
