"""`run_pipeline(config)`: the stages in order, gates between them, the report at the end.

Order: data (hold-out split) -> finetune -> eval base, eval fine-tuned -> gates -> quantize -> eval
quantized -> gates -> report. A failed gate stops the run with GateFailedError (exit 1) after writing
pipeline.json and the report, so what was built stays on disk, valid, and explained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedops.artifact import hash_files
from embedops.errors import EmbedopsError, GateFailedError
from embedops.models import resolve
from embedops.pipeline.config import PipelineConfig
from embedops.pipeline.gates import check_metrics_available
from embedops.pipeline.ledger import Ledger, content_hash, data_hash, model_hash
from embedops.pipeline.recipe import choose_recipe
from embedops.pipeline.report import write_reports
from embedops.pipeline.split import EVAL_FILE, TRAIN_FILE, split_pairs, summarise
from embedops.pipeline.stages import eval_metrics, eval_stage, finetune_stage, quantize_stage

FINETUNED, QUANTIZED, DATA_DIR = "finetuned", "quantized", "data"


@dataclass
class PipelineResult:
    directory: Path
    document: dict[str, Any]  # what pipeline.json holds
    report: Path


def _files_hash(directory: Path) -> str | None:
    return content_hash(hash_files(directory)) if directory.is_dir() else None


def _data_stage(config: PipelineConfig, ledger: Ledger) -> tuple[Path, Path, dict[str, Any]]:
    """The training file, the evaluation data and the data summary (a hold-out split without --eval-data)."""
    directory = config.output / DATA_DIR
    inputs = {"data_sha256": data_hash(config.data), "hold_out": config.eval_data is None}
    if config.eval_data is None:
        inputs.update(eval_fraction=config.eval_fraction, seed=config.seed)
        record = ledger.run_stage(
            "data",
            inputs,
            lambda: split_pairs(config.data, directory, fraction=config.eval_fraction, seed=config.seed).to_record(),
            output=directory,
            output_hash=_files_hash,
        )
        return directory / TRAIN_FILE, directory / EVAL_FILE, record.result
    record = ledger.run_stage("data", inputs, lambda: summarise(config.data)[0].to_record())
    return config.data, config.eval_data, record.result


def _check_gates(ledger: Ledger, config: PipelineConfig, model: str, scores: dict, base: dict) -> None:
    outcomes = [gate.check(model, scores, base) for gate in config.parsed_gates]
    ledger.document["gates"].extend(outcomes)
    failed = [outcome for outcome in outcomes if not outcome["passed"]]
    for outcome in outcomes:
        print(f"gate {outcome['gate']}: {'passed' if outcome['passed'] else 'FAILED'} - {outcome['detail']}")
    if failed:
        raise GateFailedError(
            "; ".join(f"gate {outcome['gate']} failed for {outcome['detail']}" for outcome in failed)
            + f"; artifacts so far are kept in {config.output}"
        )


def _stages(config: PipelineConfig, ledger: Ledger) -> None:
    train_file, eval_data, summary = _data_stage(config, ledger)
    ledger.document["data"] = summary
    task_kind, metrics = eval_metrics(eval_data, config.eval_split)
    check_metrics_available(config.parsed_gates, metrics, task_kind)
    recipe = choose_recipe(
        summary["train_pairs"],
        use_lora=config.use_lora,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
    )
    ledger.document["recipe"] = recipe.to_record()
    ledger.document["commands"] = {"reproduce": config.command(recipe.epochs, recipe.batch_size, recipe.lr)}
    for line in recipe.why:
        print(f"recipe: {line}")

    base = resolve(config.base_model)
    base_hash, eval_hash = model_hash(base), data_hash(eval_data)
    finetuned = config.output / FINETUNED
    ledger.run_stage(
        "finetune",
        {
            "data_sha256": data_hash(train_file),
            "base_model": base_hash,
            "use_lora": config.use_lora,
            "seed": config.seed,
            "recipe": {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "lr": recipe.lr},
        },
        lambda: finetune_stage(config, train_file, recipe, finetuned),
        output=finetuned,
    )

    def evaluate_model(stage: str, reference: str, identity: str) -> dict:
        inputs = {"model": identity, "eval_data": eval_hash, "split": config.eval_split}
        return ledger.run_stage(stage, inputs, lambda: eval_stage(config, reference, eval_data)).result["metrics"]

    base_scores = evaluate_model("eval-base", config.base_model, base_hash)
    finetuned_hash = model_hash(resolve(finetuned))
    tuned_scores = evaluate_model("eval-finetuned", str(finetuned), finetuned_hash)
    _check_gates(ledger, config, "fine-tuned", tuned_scores, base_scores)
    if config.quantize == "none":
        return
    quantized = config.output / QUANTIZED
    ledger.run_stage(
        "quantize",
        {
            "source": finetuned_hash,
            "dtype": config.quantize,
            "max_drift": config.max_drift,
            "check_data": data_hash(train_file),
        },
        lambda: quantize_stage(config, finetuned, train_file, quantized),
        output=quantized,
    )
    quantized_scores = evaluate_model("eval-quantized", str(quantized), model_hash(resolve(quantized)))
    _check_gates(ledger, config, "quantized", quantized_scores, base_scores)


def run_pipeline(config: PipelineConfig) -> PipelineResult:
    """Run (or reuse) every stage under `config.output`; raises GateFailedError when a gate is broken."""
    config.output.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(config.output, config.to_record())
    try:
        _stages(config, ledger)
    except EmbedopsError as exc:
        ledger.document.update(status="failed", failure=str(exc))
        ledger.save()
        if isinstance(exc, GateFailedError) and "recipe" in ledger.document:
            write_reports(config.output.absolute(), ledger.document)
        raise
    ledger.document["status"] = "passed"
    report = write_reports(config.output.absolute(), ledger.document)
    ledger.save()
    return PipelineResult(config.output, ledger.document, report)
