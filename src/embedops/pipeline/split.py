"""The data stage's split: read the pairs (validate, hash, summarise) and hold out an evaluation side
(without --eval-data) and a validation side (for choosing the best epoch), each sharing no text with
training or with each other; both are written as one BEIR directory (see _HeldOut).

Pairs are grouped by their texts (case and spacing ignored): two pairs sharing a text (the same anchor,
the same positive, or one's anchor as the other's positive) are one group, and a group goes to one side
as a whole. Splitting rows at random would put the same question, or the same answer passage, on both
sides and reward memorising it. The groups are `data.dedup.related_groups`, prep's grouping; only 8-byte
digests are kept in memory, so the file streams like everywhere else in embedops.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from embedops.artifact import sha256_file
from embedops.data import PairReader
from embedops.data.dedup import related_groups
from embedops.data.readers import Example
from embedops.errors import DataError
from embedops.files import atomic_path

TRAIN_FILE = "train.jsonl"
HELDOUT_DIR = "heldout"
EVAL_SPLIT, VALIDATION_SPLIT = "test", "dev"
# Training answers added to the held-out corpus as distractors; capped so evaluating stays cheap.
MAX_DISTRACTORS = 10_000


@dataclass
class DataSummary:
    data: str
    sha256: str
    pairs: int
    with_negative: int
    anchor_chars: float
    positive_chars: float
    train_pairs: int
    eval_pairs: int | None = None
    validation_pairs: int | None = None
    groups: int | None = None
    eval_fraction: float | None = None
    validation_fraction: float | None = None
    heldout_documents: int | None = None

    def to_record(self) -> dict:
        return asdict(self)


def _key(text: str) -> int:
    normalized = " ".join(text.casefold().split()).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(normalized, digest_size=8).digest(), "big")


def summarise(data: Path) -> tuple[DataSummary, np.ndarray]:
    """Validate every line (DataError at the first bad one) and return the summary plus each row's digests
    (rows x 2: anchor, positive)."""
    keys = array("Q")
    negatives = anchor_chars = positive_chars = 0
    for example in PairReader(data):
        keys.extend((_key(example.anchor), _key(example.positive)))
        negatives += example.negative is not None
        anchor_chars += len(example.anchor)
        positive_chars += len(example.positive)
    if not keys:
        raise DataError(data, 1, "no pairs in the file")
    rows = np.frombuffer(keys, dtype=np.uint64).reshape(-1, 2)
    count = len(rows)
    summary = DataSummary(
        data=str(data.absolute()),
        sha256=sha256_file(data),
        pairs=count,
        with_negative=negatives,
        anchor_chars=round(anchor_chars / count, 1),
        positive_chars=round(positive_chars / count, 1),
        train_pairs=count,
    )
    return summary, rows


def held_out_rows(rows: np.ndarray, fractions: list[float], seed: int) -> tuple[list[set[int]], int]:
    """Row indices of each held-out side (whole groups, in one seeded order) and the number of groups.

    A group is a connected component of rows joined by a shared text, on either side (dedup's grouping).
    Groups are shuffled in the order of their smallest text digest, so the split depends on the texts and
    the seed; sides are filled one after the other from that order, so they never share a group.
    """
    none = np.empty(0, dtype=np.int64)
    labels = related_groups(len(rows), none, none, rows[:, 0], rows[:, 1], across_sides=True)
    count = int(labels.max()) + 1
    smallest = np.full(count, np.iinfo(np.uint64).max, dtype=np.uint64)
    for digests in (rows[:, 0], rows[:, 1]):
        np.minimum.at(smallest, labels, digests)
    members: list[list[int]] = [[] for _ in range(count)]
    for index, label in enumerate(labels.tolist()):
        members[label].append(index)
    order = np.argsort(smallest).tolist()
    random.Random(seed).shuffle(order)
    groups = iter(order)
    sides: list[set[int]] = []
    for fraction in fractions:
        side: set[int] = set()
        target = max(1, round(len(rows) * fraction)) if fraction else 0
        while len(side) < target and (group := next(groups, None)) is not None:
            side.update(members[group])
        sides.append(side)
    return sides, count


class _HeldOut:
    """The held-out sides as one BEIR directory: their questions as queries (split "test" for evaluation,
    "dev" for validation), ranked against every held-out answer plus up to MAX_DISTRACTORS training
    answers. Retrieval among the domain's other documents is what users run, and it keeps the task
    from being trivially easy on a small hold-out."""

    def __init__(self) -> None:
        self.corpus: dict[str, str] = {}  # text -> id
        self.queries: dict[str, str] = {}  # text -> id
        self.qrels: dict[str, set[tuple[str, str]]] = {EVAL_SPLIT: set(), VALIDATION_SPLIT: set()}
        self.distractors = 0

    def _document(self, text: str) -> str:
        return self.corpus.setdefault(text, f"d{len(self.corpus)}")

    def add_pair(self, split: str, example: Example) -> None:
        query = self.queries.setdefault(example.anchor, f"{split}-{len(self.queries)}")
        self.qrels[split].add((query, self._document(example.positive)))
        if example.negative is not None:
            self._document(example.negative)

    def add_distractors(self, example: Example) -> None:
        for text in (example.positive, example.negative):
            if text is not None and self.distractors < MAX_DISTRACTORS and text not in self.corpus:
                self._document(text)
                self.distractors += 1

    def write(self, directory: Path) -> None:
        (directory / "qrels").mkdir(parents=True)
        for name, texts in (("corpus.jsonl", self.corpus), ("queries.jsonl", self.queries)):
            with open(directory / name, "w", encoding="utf-8") as handle:
                for text, identifier in texts.items():
                    handle.write(json.dumps({"_id": identifier, "text": text}, ensure_ascii=False) + "\n")
        for split, pairs in self.qrels.items():
            if pairs:
                lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t1" for q, d in sorted(pairs))]
                (directory / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def split_pairs(
    data: Path, directory: Path, *, eval_fraction: float, validation_fraction: float = 0.0, seed: int
) -> DataSummary:
    """Write `train.jsonl` and, for fractions above 0, the held-out BEIR directory `heldout/` (qrels
    `test` for evaluation, `dev` for validation) under `directory`; both are replaced together."""
    summary, rows = summarise(data)
    splits = {EVAL_SPLIT: eval_fraction, VALIDATION_SPLIT: validation_fraction}
    sides, group_count = held_out_rows(rows, list(splits.values()), seed)
    held = {index: split for split, side in zip(splits, sides, strict=True) for index in side}
    if len(held) >= len(rows) or group_count < 1 + sum(1 for fraction in splits.values() if fraction):
        raise DataError(
            data,
            0,
            f"cannot hold out evaluation/validation splits: its {len(rows)} pairs form {group_count} group(s) of "
            "shared texts, leaving nothing to train on; pass --eval-data with separate evaluation data",
        )
    directory.mkdir(parents=True, exist_ok=True)
    heldout = _HeldOut()
    with atomic_path(directory / TRAIN_FILE) as staged_train:
        with open(staged_train, "w", encoding="utf-8") as train:
            for index, example in enumerate(PairReader(data)):
                if index in held:
                    heldout.add_pair(held[index], example)
                    continue
                heldout.add_distractors(example)
                record = {"anchor": example.anchor, "positive": example.positive}
                if example.negative is not None:
                    record["negative"] = example.negative
                train.write(json.dumps(record, ensure_ascii=False) + "\n")
        if held:
            with atomic_path(directory / HELDOUT_DIR) as staged_heldout:
                heldout.write(staged_heldout)
        else:
            shutil.rmtree(directory / HELDOUT_DIR, ignore_errors=True)
    summary.train_pairs = len(rows) - len(held)
    summary.eval_pairs, summary.validation_pairs = (len(side) for side in sides)
    summary.groups, summary.eval_fraction, summary.validation_fraction = group_count, eval_fraction, validation_fraction
    summary.heldout_documents = len(heldout.corpus) if held else None
    return summary
