"""`run_pipeline(config)`: the stages in order, gates between them, the report at the end.

Order: data (prep, then hold-out and validation splits) -> eval base (the evaluation data and the
bundled general-domain similarity set) -> finetune (mined negatives, a learning-rate probe, the best
epoch on validation data) -> eval fine-tuned (both again: the forgetting check) -> gates -> quantize
-> eval quantized -> gates -> report. The base model is scored first so that, under --time-budget, the time the
evaluations after training will take is measured before training is given what is left.
A failed gate stops the run with GateFailedError (exit 1) after writing pipeline.json and the report, so
what was built stays on disk, valid, and explained.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from embedops.artifact import hash_files
from embedops.errors import EmbedopsError, GateFailedError
from embedops.evaluate.gate import check_metrics_available
from embedops.models import resolve
from embedops.pipeline.config import PipelineConfig
from embedops.pipeline.ledger import Ledger, content_hash, data_hash, model_hash
from embedops.pipeline.recipe import choose_recipe
from embedops.pipeline.report import write_reports
from embedops.pipeline.split import HELDOUT_DIR, TRAIN_FILE, VALIDATION_SPLIT, split_pairs
from embedops.pipeline.stages import (
    CLEAN_FILE,
    eval_metrics,
    eval_stage,
    finetune_stage,
    general_data,
    mining_corpus,
    prep_stage,
    quantize_stage,
)
from embedops.pipeline.state import STAGES, DataRecord, EvalRecord, Forgetting, PipelineState, Stage, stage_dir
from embedops.train.distributed import Crew, current_world, process_group
from embedops.train.finetune import training_device

# Quantizing (export, int8, a 500-text drift check) took 40-70 s for MiniLM-sized models on 2 cores.
QUANTIZE_RESERVE_SECONDS = 90.0
logger = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    directory: Path
    state: PipelineState
    report: Path

    @property
    def document(self) -> dict[str, Any]:
        """What pipeline.json holds."""
        return self.state.to_json()

    @property
    def final_model(self) -> Path:
        return self.state.final_model(self.directory)


def _files_hash(directory: Path) -> str | None:
    return content_hash(hash_files(directory)) if directory.is_dir() else None


def _dev_split(config: PipelineConfig) -> bool:
    """A BEIR --eval-data directory with a dev split chooses the best epoch, instead of carved-off pairs."""
    eval_data = config.eval_data
    return (
        eval_data is not None
        and eval_data.is_dir()
        and config.eval_split != "dev"
        and (eval_data / "qrels" / "dev.tsv").is_file()
    )


def _data_stage(
    config: PipelineConfig, ledger: Ledger, base_hash: str
) -> tuple[Path, Path, tuple[Path, str], DataRecord]:
    """Clean the pairs, split off what training must not see; returns the training file, the evaluation
    data, the validation data (path, split) and the data summary."""
    directory = stage_dir(config.output, Stage.DATA)
    hold_out, dev_split = config.eval_data is None, _dev_split(config)
    fractions = {
        "eval_fraction": config.eval_fraction if hold_out else 0.0,
        # No validation side where a dev split picks the epoch, or where nothing is picked (--patience 0).
        "validation_fraction": 0.0 if dev_split or config.patience == 0 else config.validation_fraction,
    }
    inputs = {"data_sha256": data_hash(config.data), "base_model": base_hash, "seed": config.seed, **fractions}

    def prepare() -> dict[str, Any]:
        cleaned = prep_stage(config, directory)
        summary = split_pairs(directory / CLEAN_FILE, directory, seed=config.seed, **fractions).to_record()
        return summary | {"data": str(config.data.absolute()), "sha256": inputs["data_sha256"], "prep": cleaned}

    record = ledger.run_stage(Stage.DATA, inputs, prepare, output=directory, output_hash=_files_hash)
    held_out = directory / HELDOUT_DIR
    eval_data = config.eval_data if config.eval_data is not None else held_out
    # A dev split implies --eval-data (a BEIR directory); the test repeats it for the type checker.
    validation = (config.eval_data if dev_split and config.eval_data is not None else held_out, VALIDATION_SPLIT)
    return directory / TRAIN_FILE, eval_data, validation, cast(DataRecord, record.result)


def _check_gates(ledger: Ledger, config: PipelineConfig, stage: Stage, scores: EvalRecord, base: EvalRecord) -> None:
    """Check every --gate on the model `stage` scored; a failed one stops the run."""
    model = STAGES[stage].label
    outcomes = [gate.check(model, scores["metrics"], base["metrics"]) for gate in config.parsed_gates]
    ledger.state.gates.extend(outcomes)
    for outcome in outcomes:
        logger.info("gate %s: %s - %s", outcome.gate, "passed" if outcome.passed else "FAILED", outcome.detail)
    failed = [outcome for outcome in outcomes if not outcome.passed]
    if failed:
        raise GateFailedError(
            "; ".join(f"gate {outcome.gate} failed for {outcome.detail}" for outcome in failed)
            + f"; artifacts so far are kept in {config.output}"
        )


def _check_forgetting(ledger: Ledger, config: PipelineConfig, base: float, tuned: float) -> None:
    """Record how much general-domain similarity the fine-tuned model kept; --max-forgetting gates it."""
    change = round((tuned - base) * 100, 2)
    limit = config.max_forgetting
    passed = limit is None or -change <= limit
    ledger.state.forgetting = Forgetting(
        "bundled STS-B sample (375 general-domain pairs)", "spearman", base, tuned, change, limit, passed
    )
    logger.info(
        "general ability (STS sample, Spearman x100): base %.2f, fine-tuned %.2f (%+.2f)",
        base * 100,
        tuned * 100,
        change,
    )
    if not passed:
        raise GateFailedError(
            f"forgetting: general-domain similarity fell {-change:.2f} points (Spearman on the bundled STS-B sample, "
            f"{base * 100:.2f} -> {tuned * 100:.2f}), more than --max-forgetting {limit:g}; "
            f"artifacts so far are kept in {config.output}"
        )


def _training_deadline(config: PipelineConfig, started: float, eval_seconds: float) -> float | None:
    """When training must stop for the whole run to fit --time-budget: the budget less what the stages
    after training take (one evaluation per model still to score, measured on the base model, and the
    quantization)."""
    if config.budget_seconds is None:
        return None
    after = eval_seconds * (1 if config.quantize == "none" else 2)  # eval-quantized skips the general check
    after += 0 if config.quantize == "none" else QUANTIZE_RESERVE_SECONDS
    deadline = started + config.budget_seconds - after
    logger.info(
        "time budget %s: training must end within %.0f s (%.0f s kept for evaluating and quantizing)",
        config.time_budget,
        deadline - time.time(),
        after,
    )
    return deadline


def _stages(config: PipelineConfig, ledger: Ledger, started: float, crew: Crew) -> None:
    if config.eval_data is not None:  # a gate on a metric the evaluation cannot produce fails before any work
        task_kind, metrics = eval_metrics(config.eval_data, config.eval_split)
        check_metrics_available(config.parsed_gates, metrics, task_kind)
    base_hash = model_hash(resolve(config.base_model))
    train_file, eval_data, validation, summary = _data_stage(config, ledger, base_hash)
    state = ledger.state
    state.data = summary
    task_kind, metrics = eval_metrics(eval_data, config.eval_split)
    check_metrics_available(config.parsed_gates, metrics, task_kind)
    recipe = choose_recipe(
        summary["train_pairs"],
        use_lora=config.use_lora,
        with_negatives=summary["with_negative"] > 0,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        mine_negatives=config.mine_negatives,
        patience=config.patience,
    )
    corpus = mining_corpus(config) if recipe.mine_negatives else None
    if corpus is not None:
        recipe.why.append(f"negatives are mined from {corpus}, the documents the evaluation searches")
    state.recipe, state.reproduce = recipe, config.command(recipe)
    for line in recipe.why:
        logger.info("recipe: %s", line)

    eval_hash = data_hash(eval_data)

    def evaluate_model(stage: Stage, reference: str, identity: str) -> EvalRecord:
        inputs = {"model": identity, "eval_data": eval_hash, "split": config.eval_split}
        ledger.run_stage(stage, inputs, lambda: eval_stage(config, reference, eval_data))
        return state.evaluation(stage)

    general = general_data()
    general_hash = data_hash(general)

    def general_score(stage: Stage, reference: str, identity: str) -> EvalRecord:
        inputs = {"model": identity, "data": general_hash}
        ledger.run_stage(stage, inputs, lambda: eval_stage(config, reference, general))
        return state.evaluation(stage)

    base_scores = evaluate_model(Stage.EVAL_BASE, config.base_model, base_hash)
    base_general = general_score(Stage.GENERAL_BASE, config.base_model, base_hash)
    deadline = _training_deadline(config, started, base_scores["seconds"] + base_general["seconds"])
    finetuned = stage_dir(config.output, Stage.FINETUNE)
    ledger.run_stage(
        Stage.FINETUNE,
        {
            "data_sha256": data_hash(train_file),
            "base_model": base_hash,
            "use_lora": config.use_lora,
            "seed": config.seed,
            "recipe": {key: value for key, value in recipe.to_record().items() if key != "why"},
            "validation": {"data": data_hash(validation[0]), "split": validation[1]} if recipe.patience else None,
            "mine_corpus": data_hash(corpus) if corpus is not None else None,
            "time_budget": config.time_budget,
            # Several processes multiply the batch the loss sees; one process keeps the key out (and old runs valid).
            **({"processes": crew.world.size} if crew.world.size > 1 else {}),
        },
        lambda: finetune_stage(config, train_file, recipe, validation, finetuned, deadline, crew),
        output=finetuned,
    )
    finetuned_hash = model_hash(resolve(finetuned))
    tuned_scores = evaluate_model(Stage.EVAL_FINETUNED, str(finetuned), finetuned_hash)
    tuned_general = general_score(Stage.GENERAL_FINETUNED, str(finetuned), finetuned_hash)
    _check_forgetting(ledger, config, base_general["metrics"]["spearman"], tuned_general["metrics"]["spearman"])
    _check_gates(ledger, config, Stage.EVAL_FINETUNED, tuned_scores, base_scores)
    if config.quantize == "none":
        return
    quantized = stage_dir(config.output, Stage.QUANTIZE)
    ledger.run_stage(
        Stage.QUANTIZE,
        {
            "source": finetuned_hash,
            "dtype": config.quantize,
            "max_drift": config.max_drift,
            "check_data": data_hash(train_file),
        },
        lambda: quantize_stage(config, finetuned, train_file, quantized),
        output=quantized,
    )
    quantized_scores = evaluate_model(Stage.EVAL_QUANTIZED, str(quantized), model_hash(resolve(quantized)))
    _check_gates(ledger, config, Stage.EVAL_QUANTIZED, quantized_scores, base_scores)


def run_pipeline(config: PipelineConfig) -> PipelineResult:
    """Run (or reuse) every stage under `config.output`; raises GateFailedError when a gate is broken.

    Under torchrun or `accelerate launch`, rank 0 runs the pipeline and the other processes join it for
    training alone (train.distributed.Crew); every process returns rank 0's result."""
    world = current_world()
    if world.size == 1:
        return _run(config, Crew(world))
    with process_group(world, training_device(config.device), config.ddp_timeout):
        crew = Crew(world)
        return crew.run(lambda: _run(config, crew))


def _run(config: PipelineConfig, crew: Crew) -> PipelineResult:
    config.output.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(config.output, config.to_record())
    state = ledger.state
    try:
        _stages(config, ledger, time.time(), crew)
    except EmbedopsError as exc:
        state.status, state.failure = "failed", str(exc)
        ledger.save()
        if isinstance(exc, GateFailedError) and state.recipe is not None:
            write_reports(config.output.absolute(), state)
        raise
    state.status = "passed"
    report = write_reports(config.output.absolute(), state)
    ledger.save()
    return PipelineResult(config.output, state, report)
