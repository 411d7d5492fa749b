"""`finetune(config)`: pairs file + base model -> fine-tuned (or LoRA adapter) artifact.

The order matters for the promise "bad input loses nothing": the data is validated completely
before any directory is created (train.prepare), checkpoints live in a work directory beside the output
(`.NAME.work/`, kept until success so `--resume` can continue), and the artifact is published by
rename only at the very end.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedops.artifact import ArtifactBuilder, Manifest
from embedops.data import ReadStats
from embedops.errors import ConfigError, MissingDependencyError
from embedops.evaluate.metrics import pair_retrieval_metrics
from embedops.models import load as load_model
from embedops.train import distributed
from embedops.train.config import FinetuneConfig
from embedops.train.distributed import World, current_world, main_first, on_main
from embedops.train.prepare import datasets, prepare
from embedops.train.prepare import work_dir_for as work_dir_for  # where callers have always found it
from embedops.train.probe import ProbeOutcome, estimate_line
from embedops.train.records import (
    build_manifest,
    plot_loss,
    plot_validation,
    training_record,
    write_model_card,
    write_training_log,
)

if TYPE_CHECKING:
    import numpy as np
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    from embedops.train.selection import EpochSelection

logger = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    path: Path
    manifest: Manifest
    stats: ReadStats


def _loss(config: FinetuneConfig, model: SentenceTransformer, gather: bool = False) -> Any:
    """MNRL, or its cached form; with `gather`, every process's candidates are negatives for every anchor."""
    from sentence_transformers import losses

    if config.loss == "cached-mnrl":
        return losses.CachedMultipleNegativesRankingLoss(
            model, mini_batch_size=config.mini_batch_size, gather_across_devices=gather
        )
    return losses.MultipleNegativesRankingLoss(model, gather_across_devices=gather)


def _add_lora(config: FinetuneConfig, model: SentenceTransformer) -> None:
    try:
        from peft import LoraConfig, TaskType
    except ImportError as exc:
        raise MissingDependencyError("peft", "train") from exc
    model.add_adapter(
        LoraConfig(
            task_type=TaskType.FEATURE_EXTRACTION,
            r=config.lora.r,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=config.lora.target_modules,
        )
    )


def _precision_flags(config: FinetuneConfig, use_cuda: bool) -> dict[str, bool]:
    import torch

    precision = config.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if use_cuda else "fp32"
    if precision != "fp32" and not use_cuda:
        raise ConfigError(f"--precision {precision} needs a CUDA device; on CPU use fp32")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def training_device(requested: str | None) -> str:
    """The device asked for, or CUDA where there is one; refused when CUDA is asked for and absent."""
    import torch

    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available; use --device cpu")
    return device


def sanity_eval(model: SentenceTransformer, holdout: Dataset, batch_size: int) -> dict[str, float]:
    """MRR@10 and Hit@1 of each held-out anchor's own positive among all held-out documents."""

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)

    anchors = encode(holdout["anchor"])
    positives = encode(holdout["positive"])
    negatives = encode(holdout["negative"]) if "negative" in holdout.column_names else None
    metrics = pair_retrieval_metrics(anchors, positives, negatives, k=10)
    return {"mrr@10": metrics["mrr@10"], "hit@1": metrics["hit@1"]}


def _training_arguments(
    config: FinetuneConfig,
    output_dir: Path,
    device: str,
    steps_per_epoch: int,
    lr: float,
    max_steps: int = -1,
    world: World | None = None,
) -> Any:
    """The trainer's arguments. `max_steps` > 0 is a probe: a short stretch, nothing saved, and the
    constant schedule of the main run it stands in for."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers

    use_cuda = device.startswith("cuda")
    precision = _precision_flags(config, use_cuda)
    probing = max_steps > 0
    total_steps = max_steps if probing else steps_per_epoch * config.epochs
    if config.lr_schedule == "plateau" or probing:
        # Constant after a warm-up of a tenth of one epoch: the length of the run is not known in advance,
        # so validation decays the rate (train.selection) instead of a schedule tied to the ceiling.
        schedule: dict[str, Any] = {
            "lr_scheduler_type": "constant_with_warmup",
            "warmup_steps": -(-steps_per_epoch // 10),
        }
    else:
        schedule = {"lr_scheduler_type": "linear", "warmup_ratio": config.warmup_ratio}
    arguments: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        max_steps=max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=lr,
        seed=config.seed,
        data_seed=config.seed,
        # In-batch negatives must not contain the anchor's own positive text twice.
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no" if probing else ("steps" if config.save_every else "epoch"),
        save_steps=config.save_every or 500,
        save_total_limit=2,
        logging_strategy="no" if probing else "steps",  # a probe reports its score, not a loss per step
        logging_steps=max(1, min(50, total_steps // 20)),
        report_to="none",
        use_cpu=not use_cuda,
        dataloader_drop_last=False,
        disable_tqdm=True,  # train.trainer draws the bar; the trainer's own writes raw log dicts under it
        **schedule,
        bf16=precision["bf16"],
        fp16=precision["fp16"],
    )
    # Several processes: one no-duplicates batch of world x batch cut into per-process parts, gloo on CPU.
    world = world or World()
    arguments |= distributed.trainer_arguments(world, use_cuda, config.ddp_timeout)
    training_arguments = SentenceTransformerTrainingArguments(**arguments)
    if world.size > 1:
        distributed.plain_cpu_device(training_arguments)
    return training_arguments


def _probe(
    config: FinetuneConfig,
    model: SentenceTransformer,
    dataset: Dataset,
    work: Path,
    device: str,
    steps_per_epoch: int,
    selection: EpochSelection,
    candidates: list[float],
    world: World,
) -> ProbeOutcome:
    """Run the learning-rate probe (train.probe) over `candidates`; the model ends at its base weights."""
    from embedops.train.probe import probe_learning_rates, probe_steps
    from embedops.train.selection import snapshot
    from embedops.train.trainer import Trainer

    steps = probe_steps(steps_per_epoch, config.probe_steps)
    base_state = snapshot(model)

    def train_at(rate: float) -> float:
        arguments = _training_arguments(
            config, work / "probe", device, steps_per_epoch, rate, max_steps=steps, world=world
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=dataset,
            loss=_loss(config, model, gather=world.size > 1),  # the loss of the main run it stands in for
            progress=False,  # a probe reports its score, not its steps
        )
        started = time.perf_counter()
        trainer.train()
        return time.perf_counter() - started

    logger.info("probe: %d learning rates, %d steps each, scored on %s", len(candidates), steps, selection.source)
    return probe_learning_rates(
        candidates,
        train_at,
        lambda: selection.score(model),
        lambda: model.load_state_dict(base_state),
        steps,
        work=work,
        deadline=selection.deadline,
    )


def finetune(config: FinetuneConfig, selection: EpochSelection | None = None) -> FinetuneResult:
    """Train `config.base_model` on `config.data` and publish the result at `config.output`.

    With `selection`, the model is scored on its validation data after every epoch, training stops when
    the score stops improving, and the best epoch's weights are published (see train.selection).
    Under a launcher (torchrun, `accelerate launch`) every process trains a replica (train.distributed);
    rank 0 alone validates, and every process follows its decisions (train.selection).
    """
    # The device is checked before anything is written: a bad one loses nothing.
    world, device = current_world(), training_device(config.device)
    if world.size == 1:
        return _finetune(config, selection, world, device)
    with distributed.process_group(world, device, config.ddp_timeout) as device:
        return _finetune(config, selection, world, device)


def _finetune(config: FinetuneConfig, selection: EpochSelection | None, world: World, device: str) -> FinetuneResult:
    prepared = on_main(world, lambda: prepare(config, world.size))
    stats, data_sha256, work = prepared.stats, prepared.data_sha256, prepared.work
    dataset, holdout = main_first(world, lambda: datasets(config, prepared))

    model = load_model(prepared.base, device=device)
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    before = sanity_eval(model, holdout, config.batch_size) if holdout is not None and world.is_main else None
    if config.use_lora:
        _add_lora(config, model)

    from embedops.train.trainer import Trainer

    steps_per_epoch = -(-len(dataset) // (config.batch_size * world.size))
    lr, probe, keep_best = config.learning_rate, None, None
    started = time.perf_counter()
    if config.lr_candidates:
        if selection is None:
            raise ConfigError("a learning-rate probe needs validation data to score the candidates")
        probe = _probe(config, model, dataset, work, device, steps_per_epoch, selection, config.lr_candidates, world)
        lr, selection.probe = probe.chosen, probe.to_record()
        validation = sum(selection.validation_seconds) / max(1, len(selection.validation_seconds))
        logger.info(estimate_line(probe, steps_per_epoch, validation, config.epochs))
    from embedops.train.checkpoints import RunClock, latest_complete

    checkpoint = on_main(world, lambda: latest_complete(work / "checkpoints") if prepared.resuming else None)
    clock = RunClock(work, checkpoint, writes=world.is_main)
    probe_seconds = clock.probe_seconds(time.perf_counter() - started)
    if selection is not None:
        from embedops.train.selection import KeepBestEpoch

        base_score = probe.base_score if probe is not None else None
        keep_best = KeepBestEpoch(model, selection, state_dir=work, base_score=base_score)
    arguments = _training_arguments(config, work / "checkpoints", device, steps_per_epoch, lr, world=world)
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=dataset,
        loss=_loss(config, model, gather=world.size > 1),
        callbacks=[keep_best, clock] if keep_best is not None else [clock],
    )
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint.name)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    train_seconds = clock.seconds
    if keep_best is not None:
        keep_best.restore_best()

    def publish() -> FinetuneResult:
        after = sanity_eval(model, holdout, config.batch_size) if holdout is not None else None
        # pairs/s counts the training itself; `seconds` is the whole run, across resumed segments, probe included.
        training = training_record(config, model, stats, data_sha256, trainer, train_seconds, len(dataset))
        training.update(
            lr=lr,
            seconds=round(probe_seconds + train_seconds, 1),
            probe_seconds=round(probe_seconds, 1),
            segments=clock.segments,
        )
        if config.mine_negatives:
            training.update(hard_negatives=True, mined_negatives=config.mine_negatives, mined=prepared.mined)
            training["mine_corpus"] = str(config.mine_corpus) if config.mine_corpus else None
        if selection is not None:
            training["selection"] = selection.to_record()
        if holdout is not None:
            training["sanity_eval"] = {"pairs": len(holdout), "before": before, "after": after}
        if world.size > 1:
            training["distributed"] = distributed.record(world, config.batch_size, device)
        manifest = build_manifest(config, prepared.base, model, training)
        with ArtifactBuilder(config.output, force=config.force) as builder:
            model.save(str(builder.path), create_model_card=False)
            write_training_log(builder.path, trainer.state.log_history)
            plot_loss(builder.path, trainer.state.log_history)
            if selection is not None:
                plot_validation(builder.path, training["selection"])
            write_model_card(builder.path, manifest, name=config.output.name)
            path = builder.publish(manifest)
        shutil.rmtree(work, ignore_errors=True)
        return FinetuneResult(path=path, manifest=manifest, stats=stats)

    return on_main(world, publish)
