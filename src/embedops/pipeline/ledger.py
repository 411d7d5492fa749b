"""`pipeline.json`: one record per stage, holding a content hash of the stage's inputs, so a re-run
can tell a finished stage (same inputs, output still intact) from one that must run again.

The file is rewritten atomically after every stage, so whatever stops the run, it describes exactly
the stages that finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from embedops.artifact import hash_files, read_manifest, sha256_file, utc_now
from embedops.errors import ArtifactError
from embedops.files import write_text_atomically
from embedops.models import ModelRef
from embedops.pipeline.state import ConfigRecord, PipelineState, Stage, StageRecord, read_stages

LEDGER_NAME = "pipeline.json"
logger = logging.getLogger(__name__)


def content_hash(value: Any) -> str:
    """sha256 of a JSON-able value with sorted keys: equal inputs give equal hashes across runs."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def artifact_hash(path: Path) -> str | None:
    """The identity of an artifact's content (its files' sha256, verified), or None if it is absent or
    altered. The manifest itself is left out: recording eval scores in it must not make it a new model."""
    try:
        manifest = read_manifest(path)
        if manifest is None:
            return None
        if hash_files(path) != manifest.files_sha256:
            return None
    except (ArtifactError, OSError):
        return None
    return content_hash(manifest.files_sha256)


def model_hash(ref: ModelRef) -> str:
    """The identity of any model reference: an artifact's recorded hashes, otherwise its files' hashes."""
    if ref.source == "artifact":
        return content_hash(ref.manifest.files_sha256)
    return content_hash(hash_files(ref.path))


def data_hash(path: Path) -> str:
    """sha256 of a data file, or of every file of a directory (a BEIR corpus, queries and qrels)."""
    return sha256_file(path) if path.is_file() else content_hash(hash_files(path))


def recorded_stages(directory: Path) -> dict[Stage, StageRecord]:
    """Stage records of the last run in `directory`; an unreadable file only means nothing can be reused."""
    try:
        return read_stages(json.loads((directory / LEDGER_NAME).read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


class Ledger:
    """The previous run's records (to reuse) and this run's state (written after every stage)."""

    def __init__(self, directory: Path, config: ConfigRecord) -> None:
        self.path = directory / LEDGER_NAME
        self.previous = recorded_stages(directory)
        self.state = PipelineState(config)

    def save(self) -> None:
        self.state.updated = utc_now()
        write_text_atomically(self.path, json.dumps(self.state.to_json(), indent=2) + "\n")

    def run_stage(
        self,
        stage: Stage,
        inputs: dict[str, Any],
        work: Callable[[], Mapping[str, Any]],
        *,
        output: Path | None = None,
        output_hash: Callable[[Path], str | None] = artifact_hash,
    ) -> StageRecord:
        """Reuse the stage when its inputs hash as before and its output is intact; otherwise run `work`."""
        key = content_hash(inputs)
        previous = self.previous.get(stage)
        current = output_hash(output) if output is not None else None
        where = str(output) if output else None
        if previous and previous.input_hash == key and previous.output_hash == current:
            record = StageRecord(stage, "reused", key, inputs, where, current, 0.0, previous.result)
            logger.info("%s: reused%s (inputs %s)", stage, f" {output}" if output else "", key[:12])
        else:
            logger.info("%s: running", stage)
            started = time.perf_counter()
            result = dict(work())
            seconds = round(time.perf_counter() - started, 2)
            current = output_hash(output) if output is not None else None
            record = StageRecord(stage, "ran", key, inputs, where, current, seconds, result)
            logger.info("%s: done in %.1f s", stage, seconds)
        self.state.stages[stage] = record
        self.save()
        return record
