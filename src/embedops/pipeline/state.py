"""The pipeline's state as types: the stages and what each writes, and the document behind `pipeline.json`.

Code reads typed fields; `PipelineState.to_json` writes the same keys in the same order as every earlier
version, so reports, benchmarks and the reuse check read old and new files alike. Stage results stay
plain dictionaries in the file (a reused stage carries the record an earlier version wrote, which may lack
newer keys); the TypedDicts below name their keys for the code that reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, cast

from embedops import __version__
from embedops.artifact import utc_now
from embedops.evaluate.gate import GateOutcome
from embedops.pipeline.recipe import Recipe

LEDGER_FORMAT = 1


class Stage(StrEnum):
    """The stages in the order they run; each value is the stage's key in pipeline.json."""

    DATA = "data"
    EVAL_BASE = "eval-base"
    GENERAL_BASE = "general-base"
    FINETUNE = "finetune"
    EVAL_FINETUNED = "eval-finetuned"
    GENERAL_FINETUNED = "general-finetuned"
    QUANTIZE = "quantize"
    EVAL_QUANTIZED = "eval-quantized"


@dataclass(frozen=True)
class StageInfo:
    role: Literal["data", "build", "score", "general"]  # score: a column of the comparison on the evaluation data
    label: str  # what reports and summaries call the stage's subject: its model, or the data
    directory: str | None = None  # what it writes under the run directory


STAGES: dict[Stage, StageInfo] = {
    Stage.DATA: StageInfo("data", "data", "data"),
    Stage.EVAL_BASE: StageInfo("score", "base"),
    Stage.GENERAL_BASE: StageInfo("general", "base"),
    Stage.FINETUNE: StageInfo("build", "fine-tuned", "finetuned"),
    Stage.EVAL_FINETUNED: StageInfo("score", "fine-tuned"),
    Stage.GENERAL_FINETUNED: StageInfo("general", "fine-tuned"),
    Stage.QUANTIZE: StageInfo("build", "quantized", "quantized"),
    Stage.EVAL_QUANTIZED: StageInfo("score", "quantized"),
}
EVALUATIONS = tuple(stage for stage, info in STAGES.items() if info.role == "score")
BUILDS = tuple(stage for stage, info in STAGES.items() if info.role == "build")  # the stages that publish artifacts


def stage_dir(run: Path, stage: Stage) -> Path:
    """Where `stage` writes under the run directory `run`."""
    name = STAGES[stage].directory
    if name is None:
        raise ValueError(f"stage {stage} writes no directory")
    return run / name


class ConfigRecord(TypedDict):
    data: str
    output: str
    base_model: str
    eval_data: str | None
    eval_split: str
    eval_fraction: float
    validation_fraction: float
    use_lora: bool
    quantize: str
    gates: list[str]
    max_drift: float | None
    max_forgetting: float | None
    time_budget: str | None
    seed: int
    device: str | None


class PrepRecord(TypedDict):
    rows: int
    kept: int
    removed: dict[str, int]
    lengths: dict[str, Any]


class DataRecord(TypedDict):
    """pipeline.split's summary with the prep counts: the data stage's result."""

    data: str
    sha256: str
    pairs: int
    with_negative: int
    anchor_chars: float
    positive_chars: float
    train_pairs: int
    eval_pairs: int | None
    validation_pairs: int | None
    groups: int | None
    eval_fraction: float | None
    validation_fraction: float | None
    heldout_documents: int | None
    prep: NotRequired[PrepRecord]


class EvalRecord(TypedDict):
    dataset: str
    kind: str
    size: dict[str, int]  # {"queries": N, "documents": M} for retrieval, {"pairs": N} for similarity
    metrics: dict[str, float]
    seconds: float


class TrainingRecord(TypedDict):
    pairs: int
    epochs: int
    epochs_run: float
    batch_size: int
    lr: float
    lr_schedule: str
    steps: int
    seconds: float
    probe_seconds: NotRequired[float | None]
    pairs_per_second: float | None
    selection: NotRequired[dict[str, Any] | None]  # train.selection's record: the curve and the best epoch
    mined: NotRequired[dict[str, Any] | None]
    mined_negatives: int
    distributed: NotRequired[dict[str, Any] | None]  # train.distributed's record of a multi-process run


class QuantizeRecord(TypedDict):
    method: str | None
    dtype: str
    file: str | None
    drift: dict[str, Any]


@dataclass
class StageRecord:
    name: Stage
    status: str  # "ran" or "reused"
    input_hash: str
    inputs: dict[str, Any]
    output: str | None
    output_hash: str | None
    seconds: float
    result: dict[str, Any] = field(default_factory=dict)
    finished: str = field(default_factory=utc_now)

    @classmethod
    def from_json(cls, name: Stage, record: dict[str, Any]) -> StageRecord | None:
        """A record read back from pipeline.json, or None when it lacks what reuse compares and carries."""
        if not isinstance(record.get("input_hash"), str) or not isinstance(record.get("result"), dict):
            return None
        return cls(
            name,
            record.get("status", "ran"),
            record["input_hash"],
            record.get("inputs") or {},
            record.get("output"),
            record.get("output_hash"),
            record.get("seconds", 0.0),
            record["result"],
            record.get("finished", ""),
        )


@dataclass
class Forgetting:
    """The general-domain check: Spearman on the bundled STS sample before and after tuning."""

    data: str
    metric: str
    base: float
    finetuned: float
    change_points: float
    max_forgetting: float | None
    passed: bool


@dataclass
class PipelineState:
    """What pipeline.json holds. Fields left None are absent from the file: the run stopped before them."""

    config: ConfigRecord
    status: str = "running"  # "running", "passed" or "failed"
    failure: str | None = None
    started: str = field(default_factory=utc_now)
    stages: dict[Stage, StageRecord] = field(default_factory=dict)
    gates: list[GateOutcome] = field(default_factory=list)
    updated: str | None = None
    data: DataRecord | None = None
    recipe: Recipe | None = None
    reproduce: str | None = None  # the command that repeats the run, with the recipe written out
    forgetting: Forgetting | None = None

    def result(self, stage: Stage) -> dict[str, Any] | None:
        record = self.stages.get(stage)
        return record.result if record else None

    def evaluation(self, stage: Stage) -> EvalRecord:
        """The scores an evaluation stage recorded (KeyError when it has not run)."""
        return cast(EvalRecord, self.stages[stage].result)

    def training(self) -> TrainingRecord | None:
        return cast(TrainingRecord | None, self.result(Stage.FINETUNE))

    def quantization(self) -> QuantizeRecord | None:
        return cast(QuantizeRecord | None, self.result(Stage.QUANTIZE))

    def scored(self) -> list[tuple[Stage, EvalRecord]]:
        """The evaluations that ran, base first: the columns of every comparison."""
        return [(stage, self.evaluation(stage)) for stage in EVALUATIONS if stage in self.stages]

    def final_model(self, run: Path) -> Path:
        return final_model(run, self.stages)

    def to_json(self) -> dict[str, Any]:
        """The document in the key order pipeline.json has always had."""
        document: dict[str, Any] = {
            "format": LEDGER_FORMAT,
            "embedops": __version__,
            "status": self.status,
            "failure": self.failure,
            "started": self.started,
            "config": self.config,
            "stages": {stage.value: asdict(record) for stage, record in self.stages.items()},
            "gates": [asdict(outcome) for outcome in self.gates],
        }
        optional: dict[str, Any] = {
            "updated": self.updated,
            "data": self.data,
            "recipe": self.recipe.to_record() if self.recipe else None,
            "commands": {"reproduce": self.reproduce} if self.reproduce is not None else None,
            "forgetting": asdict(self.forgetting) if self.forgetting else None,
        }
        return document | {key: value for key, value in optional.items() if value is not None}


def final_model(run: Path, stages: Iterable[Stage]) -> Path:
    """The model to ship: the quantized one when the run quantized, else the fine-tuned one."""
    return stage_dir(run, Stage.QUANTIZE if Stage.QUANTIZE in stages else Stage.FINETUNE)


def read_stages(document: Any) -> dict[Stage, StageRecord]:
    """The stage records of a pipeline.json document (this version's or an earlier one's); anything
    unreadable only means that stage cannot be reused."""
    if not isinstance(document, dict) or document.get("format") != LEDGER_FORMAT:
        return {}
    stages = document.get("stages")
    if not isinstance(stages, dict):
        return {}
    records = {}
    for name, record in stages.items():
        try:
            stage = Stage(name)
        except ValueError:
            continue
        loaded = StageRecord.from_json(stage, record) if isinstance(record, dict) else None
        if loaded is not None:
            records[stage] = loaded
    return records
