"""The pipeline's stages as calls into the library: each takes what earlier stages produced and returns
the small result that `pipeline.json` records. Artifacts are written by `finetune` and `quantize`
themselves, which publish by rename, so a stage that fails or is stopped leaves the previous artifact whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedops.pipeline.config import PipelineConfig
from embedops.pipeline.recipe import Recipe

EVAL_BATCH_SIZE = 32


def finetune_stage(config: PipelineConfig, train_file: Path, recipe: Recipe, output: Path) -> dict[str, Any]:
    """Fine-tune the base model on the training side; returns the training record of the new manifest."""
    from embedops.train.config import FinetuneConfig
    from embedops.train.finetune import finetune

    result = finetune(
        FinetuneConfig(
            data=train_file,
            output=output,
            base_model=config.base_model,
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            lr=recipe.lr,
            use_lora=config.use_lora,
            seed=config.seed,
            device=config.device,
            force=True,
        )
    )
    training = result.manifest.training or {}
    keep = ("pairs", "epochs", "batch_size", "lr", "steps", "seconds", "pairs_per_second")
    return {key: training.get(key) for key in keep}


def eval_stage(config: PipelineConfig, model: str, eval_data: Path) -> dict[str, Any]:
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


def quantize_stage(config: PipelineConfig, source: Path, check_data: Path, output: Path) -> dict[str, Any]:
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
