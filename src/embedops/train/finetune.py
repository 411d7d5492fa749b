"""`finetune(config)`: pairs file + base model -> fine-tuned (or LoRA adapter) artifact.

The order matters for the promise "bad input loses nothing": the data is validated completely
before any directory is created, checkpoints live in a work directory beside the output
(`.NAME.work/`, kept until success so `--resume` can continue), and the artifact is published by
rename only at the very end.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedops.artifact import ArtifactBuilder, Manifest, check_output_free, sha256_file, write_text_atomically
from embedops.data import PairReader, ReadStats
from embedops.errors import ConfigError, MissingDependencyError
from embedops.evaluate.metrics import pair_retrieval_metrics
from embedops.models import ModelRef, resolve
from embedops.models import load as load_model
from embedops.train.config import FinetuneConfig
from embedops.train.probe import ProbeOutcome, estimate_line
from embedops.train.records import plot_loss, plot_validation, write_model_card, write_training_log

if TYPE_CHECKING:
    import numpy as np
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    from embedops.train.selection import EpochSelection

_STATE = "state.json"
logger = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    path: Path
    manifest: Manifest
    stats: ReadStats


def work_dir_for(output: Path) -> Path:
    """Where checkpoints of a run towards `output` live until it succeeds."""
    output = output.absolute()
    return output.parent / f".{output.name}.work"


def scan_data(config: FinetuneConfig) -> tuple[ReadStats, str]:
    """Validate every line (raising DataError at the first bad one) and hash the file, in one pass."""
    reader = PairReader(config.data, skip_invalid=config.skip_invalid)
    for _ in reader:
        pass
    return reader.stats, sha256_file(config.data)


def _examples(path: str, skip_invalid: bool, with_negative: bool, data_sha256: str) -> Iterator[dict[str, str | None]]:
    # data_sha256 is unused here but part of the arguments, so datasets' cache key changes with the content.
    del data_sha256
    for example in PairReader(path, skip_invalid=skip_invalid):
        row: dict[str, str | None] = {"anchor": example.anchor, "positive": example.positive}
        if with_negative:
            row["negative"] = example.negative
        yield row


def build_dataset(config: FinetuneConfig, stats: ReadStats, data_sha256: str, cache_dir: Path) -> Dataset:
    """Stream the file into an on-disk Arrow dataset: memory stays flat however long the file is."""
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    return Dataset.from_generator(
        _examples,
        gen_kwargs={
            "path": str(config.data),
            "skip_invalid": config.skip_invalid,
            "with_negative": stats.with_negative > 0,
            "data_sha256": data_sha256,
        },
        cache_dir=str(cache_dir),
    )


def _run_key(config: FinetuneConfig, data_sha256: str) -> dict[str, Any]:
    """What an interrupted run must share with the one that continues it: the data, the model, and every
    setting that shapes the steps, so a resumed manifest never records a recipe it did not train."""
    settings = ("base_model", "use_lora", "epochs", "batch_size", "loss", "seed", "mine_negatives", "lr_schedule")
    key = {"data_sha256": data_sha256} | {name: getattr(config, name) for name in settings}
    return key | {"lr": config.learning_rate, "lr_candidates": config.lr_candidates}


def _prepare_work_dir(config: FinetuneConfig, data_sha256: str) -> tuple[Path, bool]:
    """The run's work directory, and whether it continues an interrupted run there."""
    work = work_dir_for(config.output)
    state_path = work / _STATE
    run_key = _run_key(config, data_sha256)
    previous = json.loads(state_path.read_text()) if state_path.is_file() else None
    if config.resume:
        if previous is None:
            raise ConfigError(f"--resume: no interrupted run to continue for {config.output} ({work} is missing)")
        changed = [key for key, value in run_key.items() if previous.get(key) != value]
        if changed:
            raise ConfigError(
                f"--resume: the interrupted run used a different {', '.join(changed)}; "
                "resume with the same data, model and settings, or start over with --force"
            )
        return work, True
    if config.resume_if_possible and previous == run_key:
        logger.info("continuing the interrupted run in %s", work)
        return work, True
    if work.exists():
        if not (config.force or config.resume_if_possible):
            raise ConfigError(
                f"checkpoints of an interrupted run exist in {work}: continue it with --resume, "
                "or start over with --force"
            )
        shutil.rmtree(work)
    work.mkdir(parents=True)
    write_text_atomically(state_path, json.dumps(run_key))
    return work, False


def _mine_negatives(config: FinetuneConfig, work: Path, resuming: bool) -> tuple[FinetuneConfig, dict[str, int]]:
    """Mine hard negatives with the base model into the work dir (kept for --resume); train on those.
    Returns the config that trains on them and how many pairs got a mined and a random negative."""
    from embedops.data.mine import MineConfig, mine

    mined, summary_path = work / "mined-negatives.jsonl", work / "mined-negatives.json"
    if not (resuming and mined.is_file() and summary_path.is_file()):
        result = mine(
            MineConfig(
                data=config.data,
                output=mined,
                corpus=config.mine_corpus,
                model=config.base_model,
                num_negatives=config.mine_negatives,
                device=config.device,
                skip_invalid=config.skip_invalid,
                force=True,
            )
        )
        summary = {"pairs": result.pairs, "with_mined": result.pairs - result.filled, "with_random": result.filled}
        write_text_atomically(summary_path, json.dumps(summary))
        logger.info(
            "mined negatives: %d of %d pairs got a mined one, %d a random one",
            summary["with_mined"],
            summary["pairs"],
            summary["with_random"],
        )
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    return replace(config, data=mined, skip_invalid=False), summary


def _loss(config: FinetuneConfig, model: SentenceTransformer) -> Any:
    from sentence_transformers import losses

    if config.loss == "cached-mnrl":
        return losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=config.mini_batch_size)
    return losses.MultipleNegativesRankingLoss(model)


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


def _device(config: FinetuneConfig) -> str:
    import torch

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
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
    config: FinetuneConfig, output_dir: Path, device: str, steps_per_epoch: int, lr: float, max_steps: int = -1
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
    return SentenceTransformerTrainingArguments(
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
        disable_tqdm=probing,
        **schedule,
        bf16=precision["bf16"],
        fp16=precision["fp16"],
    )


def _probe(
    config: FinetuneConfig,
    model: SentenceTransformer,
    dataset: Dataset,
    work: Path,
    device: str,
    steps_per_epoch: int,
    selection: EpochSelection,
    candidates: list[float],
) -> ProbeOutcome:
    """Run the learning-rate probe (train.probe) over `candidates`; the model ends at its base weights."""
    from sentence_transformers import SentenceTransformerTrainer

    from embedops.train.probe import probe_learning_rates, probe_steps
    from embedops.train.selection import snapshot

    steps = probe_steps(steps_per_epoch, config.probe_steps)
    base_state = snapshot(model)

    def train_at(rate: float) -> float:
        trainer = SentenceTransformerTrainer(
            model=model,
            args=_training_arguments(config, work / "probe", device, steps_per_epoch, rate, max_steps=steps),
            train_dataset=dataset,
            loss=_loss(config, model),
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
    """
    check_output_free(config.output.absolute(), force=config.force)
    stats, data_sha256 = scan_data(config)
    if config.eval_sample_size and config.eval_sample_size >= stats.rows:
        raise ConfigError(
            f"--eval-sample-size {config.eval_sample_size} leaves nothing to train on ({stats.rows} valid pairs)"
        )
    base = resolve(config.base_model)
    device = _device(config)
    work, resuming = _prepare_work_dir(config, data_sha256)

    train_config, train_stats, train_sha256, mined = config, stats, data_sha256, None
    if config.mine_negatives:
        train_config, mined = _mine_negatives(config, work, resuming)
        train_stats, train_sha256 = scan_data(train_config)
    dataset = build_dataset(train_config, train_stats, train_sha256, work / "dataset")
    holdout = None
    if config.eval_sample_size:
        split = dataset.train_test_split(test_size=config.eval_sample_size, seed=config.seed)
        dataset, holdout = split["train"], split["test"]

    model = load_model(base, device=device)
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    before = sanity_eval(model, holdout, config.batch_size) if holdout is not None else None
    if config.use_lora:
        _add_lora(config, model)

    from sentence_transformers import SentenceTransformerTrainer

    steps_per_epoch = -(-len(dataset) // config.batch_size)
    lr, probe, keep_best = config.learning_rate, None, None
    started = time.perf_counter()
    if config.lr_candidates:
        if selection is None:
            raise ConfigError("a learning-rate probe needs validation data to score the candidates")
        probe = _probe(config, model, dataset, work, device, steps_per_epoch, selection, config.lr_candidates)
        lr, selection.probe = probe.chosen, probe.to_record()
        validation = sum(selection.validation_seconds) / max(1, len(selection.validation_seconds))
        logger.info(estimate_line(probe, steps_per_epoch, validation, config.epochs))
    from embedops.train.checkpoints import RunClock, latest_complete

    checkpoint = latest_complete(work / "checkpoints") if resuming else None
    clock = RunClock(work, checkpoint)
    probe_seconds = clock.probe_seconds(time.perf_counter() - started)
    if selection is not None:
        from embedops.train.selection import KeepBestEpoch

        base_score = probe.base_score if probe is not None else None
        keep_best = KeepBestEpoch(model, selection, state_dir=work, base_score=base_score)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=_training_arguments(config, work / "checkpoints", device, steps_per_epoch, lr),
        train_dataset=dataset,
        loss=_loss(config, model),
        callbacks=[keep_best, clock] if keep_best is not None else [clock],
    )
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint.name)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    train_seconds = clock.seconds
    if keep_best is not None:
        keep_best.restore_best()
    after = sanity_eval(model, holdout, config.batch_size) if holdout is not None else None

    # pairs/s counts the training itself; `seconds` is the whole run, across resumed segments, probe included.
    training = _training_record(config, model, stats, data_sha256, trainer, train_seconds, len(dataset))
    training.update(
        lr=lr,
        seconds=round(probe_seconds + train_seconds, 1),
        probe_seconds=round(probe_seconds, 1),
        segments=clock.segments,
    )
    if config.mine_negatives:
        training.update(hard_negatives=True, mined_negatives=config.mine_negatives, mined=mined)
        training["mine_corpus"] = str(config.mine_corpus) if config.mine_corpus else None
    if selection is not None:
        training["selection"] = selection.to_record()
    if holdout is not None:
        training["sanity_eval"] = {"pairs": len(holdout), "before": before, "after": after}
    manifest = _manifest(config, base, model, training)
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


def _manifest(config: FinetuneConfig, base: ModelRef, model: SentenceTransformer, training: dict[str, Any]) -> Manifest:
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


def _training_record(
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
