"""Everything a fine-tuning run does before it loads a model: check the data and the output, open (or
continue) the work directory, mine negatives, stream the pairs into a dataset.

Kept apart from the training itself because under several processes only rank 0 runs `prepare` (it
writes) and hands the result to the others (train.distributed.on_main); the dataset is then built by
rank 0 first and opened from its cache by the rest.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedops.artifact import check_output_free, sha256_file
from embedops.data import PairReader, ReadStats
from embedops.errors import ConfigError
from embedops.files import write_text_atomically
from embedops.models import ModelRef, resolve
from embedops.train.config import FinetuneConfig

if TYPE_CHECKING:
    from datasets import Dataset

_STATE = "state.json"
logger = logging.getLogger(__name__)


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


def _run_key(config: FinetuneConfig, data_sha256: str, world_size: int = 1) -> dict[str, Any]:
    """What an interrupted run must share with the one that continues it: the data, the model, and every
    setting that shapes the steps, so a resumed manifest never records a recipe it did not train. The
    number of processes is part of it when above one: it sets the batches and each rank's saved RNG state."""
    settings = ("base_model", "use_lora", "epochs", "batch_size", "loss", "seed", "mine_negatives", "lr_schedule")
    key = {"data_sha256": data_sha256} | {name: getattr(config, name) for name in settings}
    key |= {"lr": config.learning_rate, "lr_candidates": config.lr_candidates}
    return key | ({"world_size": world_size} if world_size > 1 else {})


def _prepare_work_dir(config: FinetuneConfig, data_sha256: str, world_size: int = 1) -> tuple[Path, bool]:
    """The run's work directory, and whether it continues an interrupted run there."""
    work = work_dir_for(config.output)
    state_path = work / _STATE
    run_key = _run_key(config, data_sha256, world_size)
    previous = json.loads(state_path.read_text()) if state_path.is_file() else None
    if config.resume:
        if previous is None:
            raise ConfigError(f"--resume: no interrupted run to continue for {config.output} ({work} is missing)")
        changed = [key for key in run_key.keys() | previous.keys() if previous.get(key) != run_key.get(key)]
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


@dataclass
class Prepared:
    """What rank 0 checked, found and decided before training; every process trains from it."""

    stats: ReadStats
    data_sha256: str
    base: ModelRef
    work: Path
    resuming: bool
    train_config: FinetuneConfig
    train_stats: ReadStats
    train_sha256: str
    mined: dict[str, int] | None


def prepare(config: FinetuneConfig, world_size: int) -> Prepared:
    """Every check that needs no model, then the work directory (and mined negatives) of the run."""
    check_output_free(config.output.absolute(), force=config.force)
    stats, data_sha256 = scan_data(config)
    if config.eval_sample_size and config.eval_sample_size >= stats.rows:
        raise ConfigError(
            f"--eval-sample-size {config.eval_sample_size} leaves nothing to train on ({stats.rows} valid pairs)"
        )
    base = resolve(config.base_model)
    work, resuming = _prepare_work_dir(config, data_sha256, world_size)
    train_config, train_stats, train_sha256, mined = config, stats, data_sha256, None
    if config.mine_negatives:
        train_config, mined = _mine_negatives(config, work, resuming)
        train_stats, train_sha256 = scan_data(train_config)
    return Prepared(stats, data_sha256, base, work, resuming, train_config, train_stats, train_sha256, mined)


def datasets(config: FinetuneConfig, prepared: Prepared) -> tuple[Dataset, Dataset | None]:
    """The training set and the --eval-sample-size hold-out, split the same way in every process."""
    dataset = build_dataset(
        prepared.train_config, prepared.train_stats, prepared.train_sha256, prepared.work / "dataset"
    )
    if not config.eval_sample_size:
        return dataset, None
    split = dataset.train_test_split(test_size=config.eval_sample_size, seed=config.seed)
    return split["train"], split["test"]
