"""The data stage: read the pairs once (validate, hash, summarise) and, without --eval-data, hold out
an evaluation split that shares no text with training.

Pairs are grouped by their texts (case and spacing ignored): two pairs with the same anchor, or the same
positive, are one group, and a group goes to one side as a whole. Splitting rows at random would put the
same question, or the same answer passage, on both sides and reward memorising it. Only 8-byte digests
are kept in memory, so the file streams like everywhere else in embedops.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from embedops.artifact import sha256_file
from embedops.data import PairReader
from embedops.errors import DataError

TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval.jsonl"


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
    groups: int | None = None
    eval_fraction: float | None = None

    def to_record(self) -> dict:
        return asdict(self)


def _key(text: str) -> int:
    normalized = " ".join(text.casefold().split()).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(normalized, digest_size=8).digest(), "big")


class _Groups:
    """Union-find over text digests; the smaller digest becomes the root, so groups are deterministic."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, key: int) -> int:
        root = key
        while (parent := self.parent.setdefault(root, root)) != root:
            root = parent
        while self.parent[key] != root:
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def summarise(data: Path) -> tuple[DataSummary, list[tuple[int, int]]]:
    """Validate every line (DataError at the first bad one) and return the summary plus each row's digests."""
    rows: list[tuple[int, int]] = []
    negatives = anchor_chars = positive_chars = 0
    for example in PairReader(data):
        rows.append((_key(example.anchor), _key(example.positive)))
        negatives += example.negative is not None
        anchor_chars += len(example.anchor)
        positive_chars += len(example.positive)
    if not rows:
        raise DataError(data, 1, "no pairs in the file")
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


def held_out_rows(rows: list[tuple[int, int]], fraction: float, seed: int) -> tuple[set[int], int]:
    """Row indices of the evaluation side (whole groups, in a seeded order) and the number of groups."""
    groups = _Groups()
    for anchor, positive in rows:
        groups.union(anchor, positive)
    members: dict[int, list[int]] = {}
    for index, (anchor, _) in enumerate(rows):
        members.setdefault(groups.find(anchor), []).append(index)
    order = sorted(members)
    random.Random(seed).shuffle(order)
    target = max(1, round(len(rows) * fraction))
    held: set[int] = set()
    for root in order:
        if len(held) >= target:
            break
        held.update(members[root])
    return held, len(members)


def split_pairs(data: Path, directory: Path, *, fraction: float, seed: int) -> DataSummary:
    """Write `train.jsonl` and `eval.jsonl` under `directory`; both files appear together or not at all."""
    summary, rows = summarise(data)
    held, group_count = held_out_rows(rows, fraction, seed)
    if len(held) >= len(rows) or group_count < 2:
        raise DataError(
            data,
            0,
            f"cannot hold out an evaluation split: its {len(rows)} pairs form {group_count} group(s) of shared "
            "texts, leaving nothing to train on; pass --eval-data with separate evaluation data",
        )
    directory.mkdir(parents=True, exist_ok=True)
    targets = (directory / TRAIN_FILE, directory / EVAL_FILE)
    staged = [path.with_name(f".{path.name}.{os.getpid()}.tmp") for path in targets]
    with open(staged[0], "w", encoding="utf-8") as train, open(staged[1], "w", encoding="utf-8") as held_out:
        for index, example in enumerate(PairReader(data)):
            record = {"anchor": example.anchor, "positive": example.positive}
            if example.negative is not None:
                record["negative"] = example.negative
            (held_out if index in held else train).write(json.dumps(record, ensure_ascii=False) + "\n")
    for staging, target in zip(staged, targets, strict=True):
        os.replace(staging, target)
    summary.train_pairs, summary.eval_pairs = len(rows) - len(held), len(held)
    summary.groups, summary.eval_fraction = group_count, fraction
    return summary
