"""The pipeline's stages as calls into the library: each takes what earlier stages produced and returns
the small result that `pipeline.json` records. Artifacts are written by `finetune` and `quantize`
themselves, which publish by rename, so a stage that fails or is stopped leaves the previous artifact whole.
"""

from __future__ import annotations

from pathlib import Path

from embedops.pipeline.config import PipelineConfig
from embedops.pipeline.recipe import Recipe
from embedops.pipeline.state import EvalRecord, PrepRecord, QuantizeRecord, TrainingRecord
from embedops.train.distributed import Crew

EVAL_BATCH_SIZE = 32
# Validation runs after every epoch and each probed rate, so its corpus is capped: every relevant passage
# plus random distractors (evaluate.datasets.cap_documents). 2,000 passages take about a third of the
# 5,240 of climate-fever's full corpus to encode.
VALIDATION_MAX_DOCUMENTS = 2_000
CLEAN_FILE, REMOVED_FILE = "clean.jsonl", "removed.jsonl"
# The forgetting check: general-domain similarity that ships with the package, so it runs offline with no
# setup (375 STS-B dev pairs, image captions and SNLI sentences; resources/general_sts.LICENSE.txt).
GENERAL_DATA = "general_sts.tsv"


def general_data() -> Path:
    """The bundled general-domain similarity set, as a file path."""
    from importlib.resources import files

    return Path(str(files("embedops.resources") / GENERAL_DATA))


def prep_stage(config: PipelineConfig, directory: Path) -> PrepRecord:
    """Clean the pairs with `embedops prep` (normalise, drop empty/self/duplicate pairs) into `directory`.

    The split is the pipeline's own (pipeline.split) because it also carves the validation side.
    """
    from embedops.data.prep import PrepConfig, prep

    result = prep(
        PrepConfig(
            data=config.data,
            output=directory / CLEAN_FILE,
            eval_fraction=0,
            removed=directory / REMOVED_FILE,
            model=config.base_model,
            seed=config.seed,
            force=True,
        )
    )
    return {
        "rows": result.rows,
        "kept": result.train,
        "removed": {reason: count for reason, count in result.removed.items() if count},
        "lengths": result.lengths,
    }


def mining_corpus(config: PipelineConfig) -> Path | None:
    """The passages to mine hard negatives from: the corpus of a BEIR --eval-data (the documents the
    model will search; only their text is used, never their relevance labels); None means the
    training positives. A held-out split is never mined from: its answers must stay unseen."""
    if config.eval_data is not None and (config.eval_data / "corpus.jsonl").is_file():
        return config.eval_data / "corpus.jsonl"
    return None


def finetune_stage(
    config: PipelineConfig,
    train_file: Path,
    recipe: Recipe,
    validation: tuple[Path, str],
    output: Path,
    deadline: float | None = None,
    crew: Crew | None = None,
) -> TrainingRecord:
    """Fine-tune the base model on the training side, probing the step and keeping the best epoch on
    `validation` (data, split), stopping by `deadline` (time.time()); returns the training record.
    With a `crew` of several processes, every one of them trains (train.distributed)."""
    from functools import partial

    from embedops.evaluate.datasets import RetrievalTask, cap_documents, load_task
    from embedops.evaluate.scoring import default_metrics
    from embedops.pipeline.recipe import LR_DECAY
    from embedops.train.config import FinetuneConfig
    from embedops.train.finetune import finetune
    from embedops.train.selection import EpochSelection

    selection = None
    if recipe.patience:
        path, split = validation
        task = load_task(path, split=split)
        if isinstance(task, RetrievalTask):
            task = cap_documents(task, VALIDATION_MAX_DOCUMENTS, seed=config.seed)
        source = f"{path.name} ({split} split)"
        selection = EpochSelection(
            task,
            default_metrics(task)[0],
            source,
            recipe.patience,
            EVAL_BATCH_SIZE,
            decay=LR_DECAY if recipe.lr_schedule == "plateau" else None,
            deadline=deadline,
        )
    job = partial(
        finetune,
        FinetuneConfig(
            data=train_file,
            output=output,
            base_model=config.base_model,
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            lr=recipe.lr,
            use_lora=config.use_lora,
            mine_negatives=recipe.mine_negatives,
            mine_corpus=mining_corpus(config) if recipe.mine_negatives else None,
            lr_schedule=recipe.lr_schedule,
            lr_candidates=recipe.lr_candidates or None,
            seed=config.seed,
            device=config.device,
            force=True,
            resume_if_possible=True,  # a stopped pipeline continues its probe and epochs where they ended
            ddp_timeout=config.ddp_timeout,
        ),
        selection,
    )
    result = crew.everywhere(job) if crew is not None else job()
    training = result.manifest.training or {}
    return TrainingRecord(  # selection and mined are absent when nothing validated or nothing was mined
        pairs=training["pairs"],
        epochs=training["epochs"],
        epochs_run=training["epochs_run"],
        batch_size=training["batch_size"],
        lr=training["lr"],
        lr_schedule=training["lr_schedule"],
        steps=training["steps"],
        seconds=training["seconds"],
        probe_seconds=training.get("probe_seconds"),
        pairs_per_second=training["pairs_per_second"],
        selection=training.get("selection"),
        mined=training.get("mined"),
        mined_negatives=recipe.mine_negatives,
        distributed=training.get("distributed"),
    )


def eval_stage(config: PipelineConfig, model: str, eval_data: Path) -> EvalRecord:
    """Score one model on the evaluation data with embedops.evaluate; gates are the runner's business."""
    from embedops.evaluate import EvalConfig, evaluate

    result = evaluate(
        EvalConfig(
            models=[model],
            data=eval_data,
            split=config.eval_split,
            batch_size=EVAL_BATCH_SIZE,
            device=config.device,
        )
    )
    scored = result.models[0]
    return {
        "dataset": result.dataset,
        "kind": result.kind,
        "size": result.size,
        "metrics": scored.metrics,
        "seconds": round(scored.seconds, 2),
    }


def quantize_stage(config: PipelineConfig, source: Path, check_data: Path, output: Path) -> QuantizeRecord:
    """Quantize the fine-tuned model; the drift is measured on the training texts (the model's domain)."""
    from embedops.quantize import QuantizeConfig, quantize

    result = quantize(
        QuantizeConfig(
            model_path=str(source),
            output=str(output),
            dtype=config.quantize,
            check_data=str(check_data),
            max_drift=config.max_drift,
            force=True,
        )
    )
    record = result.manifest.quantization or {}
    return {
        "method": record.get("method"),
        "dtype": config.quantize,
        "file": result.manifest.file,
        "drift": record.get("drift", {}),
    }


def eval_metrics(eval_data: Path, split: str) -> tuple[str, list[str]]:
    """The evaluation's task kind and the metrics it reports, read without loading any model."""
    from embedops.evaluate.datasets import load_task
    from embedops.evaluate.scoring import default_metrics

    task = load_task(eval_data, split=split)
    return task.kind, default_metrics(task)


def directory_size(path: Path) -> int:
    """Bytes of every file under `path` (links followed: hub caches store files as links to blobs)."""
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
