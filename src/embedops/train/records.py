"""What a training run leaves beside the weights: the manifest and its training record, the log, the loss
curve and the model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedops.artifact import Manifest

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedops.data import ReadStats
    from embedops.models import ModelRef
    from embedops.train.config import FinetuneConfig


def write_training_log(directory: Path, log_history: list[dict[str, Any]]) -> None:
    with open(directory / "training_log.jsonl", "w", encoding="utf-8") as handle:
        for entry in log_history:
            handle.write(json.dumps(entry) + "\n")


def _figure() -> tuple[Any, Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=110)
    return plt, figure, axis


def _save(plt: Any, figure: Any, axis: Any, path: Path) -> Path:
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_loss(directory: Path, log_history: list[dict[str, Any]]) -> Path | None:
    """Write loss.png: training loss per logged step; nothing when the run logged no loss."""
    points = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    if not points:
        return None
    plt, figure, axis = _figure()
    steps, losses = zip(*points, strict=True)
    axis.plot(steps, losses, marker="o" if len(points) < 30 else None, linewidth=1.5)
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_title("Fine-tuning loss")
    return _save(plt, figure, axis, directory / "loss.png")


def plot_validation(directory: Path, selection: dict[str, Any]) -> Path | None:
    """Write validation.png: the validation metric per epoch (the base model as epoch 0), best marked."""
    metric, curve = selection["metric"], selection["curve"]
    if len(curve) < 2:
        return None
    plt, figure, axis = _figure()
    epochs = [point["epoch"] for point in curve]
    values = [point[metric] * 100 for point in curve]
    axis.plot(epochs, values, marker="o", linewidth=1.5, label=f"validation {metric}")
    best = next(point for point in curve if point["epoch"] == selection["best_epoch"])
    axis.plot([best["epoch"]], [best[metric] * 100], marker="*", markersize=14, linestyle="", label="published")
    axis.axhline(values[0], color="grey", linewidth=1, linestyle="--", label="base model")
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"{metric} (x100)")
    axis.set_title(f"Validation after each epoch (stopped by {selection.get('stopped_by', 'ceiling')})")
    axis.legend(loc="best", fontsize=8)
    return _save(plt, figure, axis, directory / "validation.png")


def write_model_card(directory: Path, manifest: Manifest, *, name: str) -> None:
    """README.md with the base model's licence and attribution, as its licence asks us to keep them."""
    training = manifest.training or {}
    sanity = training.get("sanity_eval")
    lines = [
        "---",
        f"license: {manifest.license or 'other'}",
        f"base_model: {manifest.base_model}",
        "library_name: sentence-transformers",
        "tags: [sentence-transformers, sentence-similarity, feature-extraction, embedops]",
        "---",
        "",
        f"# {name}",
        "",
        f"A {manifest.dim}-dimensional sentence-embedding model fine-tuned with embedops from `{manifest.base_model}`.",
        "",
        "## Training",
        "",
        f"- pairs: {training.get('pairs')} (data sha256 `{str(training.get('data_sha256'))[:16]}…`)",
        f"- loss: {training.get('loss')}, epochs: {training.get('epochs')}, "
        f"batch size: {training.get('batch_size')}, "
        f"learning rate: {training.get('lr')}, steps: {training.get('steps')}",
    ]
    if manifest.adapter:
        lines.append(f"- LoRA adapter: r={manifest.adapter.get('r')}, alpha={manifest.adapter.get('alpha')}")
    if sanity:
        before, after = sanity["before"], sanity["after"]
        lines += [
            "",
            f"## Held-out sanity evaluation ({sanity['pairs']} pairs)",
            "",
            "| metric | base | fine-tuned |",
            "|---|---|---|",
            *(f"| {metric} | {before[metric]:.4f} | {after[metric]:.4f} |" for metric in before),
        ]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from embedops.models import load",
        f'model = load("{name}")',
        "```",
        "",
        "## License and attribution",
        "",
        f"Derived from `{manifest.base_model}`"
        + (f", licensed {manifest.license}" if manifest.license else "")
        + ". The base model's licence applies to this derivative; keep this notice when redistributing.",
        "",
    ]
    (directory / "README.md").write_text("\n".join(lines), encoding="utf-8")


def build_manifest(
    config: FinetuneConfig, base: ModelRef, model: SentenceTransformer, training: dict[str, Any]
) -> Manifest:
    """The fine-tuned artifact's manifest: what the model produces, where it came from, how it was trained."""
    source = base.manifest
    adapter = None
    if config.use_lora:
        adapter = {
            "type": "lora",
            "r": config.lora.r,
            "alpha": config.lora.alpha,
            "dropout": config.lora.dropout,
            "target_modules": config.lora.target_modules,
            "merged": False,
            "base": base.name,
        }
    return Manifest(
        kind="finetuned",
        base_model=source.base_model or base.name,
        parent=base.name,
        backend="torch",
        dtype="fp32",
        dim=model.get_sentence_embedding_dimension(),
        max_seq_length=model.max_seq_length,
        pooling=source.pooling,
        normalize=source.normalize,
        license=source.license,
        attribution=source.attribution,
        adapter=adapter,
        training=training,
    )


def training_record(
    config: FinetuneConfig,
    model: SentenceTransformer,
    stats: ReadStats,
    data_sha256: str,
    trainer: Any,
    seconds: float,
    train_pairs: int,
) -> dict[str, Any]:
    return {
        "data": str(config.data),
        "data_sha256": data_sha256,
        "pairs": train_pairs,
        "skipped_lines": stats.skipped,
        "hard_negatives": stats.with_negative > 0,
        "epochs": config.epochs,
        "epochs_run": round(trainer.state.epoch or 0, 2),
        "batch_size": config.batch_size,
        "lr": config.learning_rate,
        "warmup_ratio": config.warmup_ratio,
        "loss": config.loss,
        "seed": config.seed,
        "max_seq_length": model.max_seq_length,
        "steps": trainer.state.global_step,
        "seconds": round(seconds, 1),
        "lr_schedule": config.lr_schedule,
        "pairs_per_second": round(train_pairs * (trainer.state.epoch or 0) / seconds, 1) if seconds else None,
    }
