"""`prep(config)`: clean a pairs file before training and split it without leakage.

Two streaming passes over the file, so memory grows by a few hundred bytes per pair, never by its text:
the first validates every line (the readers' PATH:LINE errors), normalises it and keeps only
fingerprints (hashes, MinHash signatures, lengths); the decisions (empty, self, length bounds, exact and
near duplicates, the train/eval split) are then made on those arrays; the second pass writes each line
where its decision sends it. Outputs are temp files renamed together at the end: all or nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedops.configs import FromFlags
from embedops.data.dedup import (
    EmbeddingSimilarity,
    MinHashSimilarity,
    exact_duplicates,
    group_split,
    near_duplicates,
    related_groups,
)
from embedops.data.lengths import TokenCounter, length_report, plot_lengths
from embedops.data.minhash import MinHasher
from embedops.data.outputs import AtomicFiles, PairWriter
from embedops.data.readers import Example, PairReader, detect_format
from embedops.data.text import matching_form, normalize_text
from embedops.errors import ConfigError

METHODS = ("minhash", "embedding")
# Decision per row; the names are the reasons written to the summary and to --removed.
TRAIN, EVAL, EMPTY, SELF, TOO_SHORT, TOO_LONG, EXACT, NEAR = range(8)
REASONS = {
    EMPTY: "empty",
    SELF: "self-pair",
    TOO_SHORT: "too-short",
    TOO_LONG: "too-long",
    EXACT: "exact-duplicate",
    NEAR: "near-duplicate",
}
_BATCH = 2048


@dataclass
class PrepConfig(FromFlags):
    """What `prep` was asked to do; `embedops prep` fills it with `from_flags`."""

    data: Path
    output: Path
    eval_fraction: float = 0.1
    min_chars: int = 1
    max_chars: int | None = None
    near_dup_threshold: float = 0.9
    near_dup_method: str = "minhash"
    removed: Path | None = None
    model: str = ""  # tokenizer for token lengths, encoder for --near-dup-method embedding; "": the bundled model
    seed: int = 42
    batch_size: int = 64
    force: bool = False

    def __post_init__(self) -> None:
        from embedops.models import DEFAULT_MODEL

        self.data, self.output = Path(self.data), Path(self.output)
        self.removed = Path(self.removed) if self.removed else None
        self.model = self.model or DEFAULT_MODEL
        checks = [
            (0 <= self.eval_fraction < 1, f"--eval-fraction must be in [0, 1), got {self.eval_fraction}"),
            (self.min_chars >= 1, f"--min-chars must be at least 1, got {self.min_chars}"),
            (
                self.max_chars is None or self.max_chars >= self.min_chars,
                f"--max-chars ({self.max_chars}) must not be below --min-chars ({self.min_chars})",
            ),
            (0 < self.near_dup_threshold <= 1, "--near-dup-threshold must be in (0, 1]"),
            (self.near_dup_method in METHODS, f"--near-dup-method must be one of {', '.join(METHODS)}"),
            (self.data.absolute() != self.output.absolute(), "--output must not be the input file"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        detect_format(self.output)

    @property
    def eval_output(self) -> Path:
        """The eval split beside the output: pairs.tsv -> pairs.eval.tsv."""
        return self.output.with_name(f"{self.output.stem}.eval{self.output.suffix}")

    @property
    def report_output(self) -> Path:
        return self.output.with_name(f"{self.output.stem}.prep.json")

    @property
    def plot_output(self) -> Path:
        return self.output.with_name(f"{self.output.stem}.lengths.png")


@dataclass
class PrepResult:
    rows: int
    train: int
    eval: int
    removed: dict[str, int]
    groups: int
    lengths: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _normalized(example: Example) -> tuple[str, str, str | None]:
    negative = normalize_text(example.negative) if example.negative is not None else None
    return normalize_text(example.anchor), normalize_text(example.positive), negative


def _digest(*texts: str | None) -> int:
    joined = "\x1f".join(text if text is not None else "\x00" for text in texts)
    return int.from_bytes(hashlib.blake2b(joined.encode("utf-8"), digest_size=8).digest(), "little")


def _first_reason(texts: tuple[str, str, str | None], config: PrepConfig) -> int:
    present = [text for text in texts if text is not None]
    anchor, positive, negative = texts
    if any(not text for text in present):
        return EMPTY
    if anchor == positive or negative in (anchor, positive):
        return SELF
    if any(len(text) < config.min_chars for text in present):
        return TOO_SHORT
    if config.max_chars is not None and any(len(text) > config.max_chars for text in present):
        return TOO_LONG
    return TRAIN


@dataclass
class _Fingerprints:
    """What pass 1 keeps per row: a few hundred bytes, whatever the length of the texts."""

    status: np.ndarray
    line: np.ndarray
    pair_hash: np.ndarray
    side_hashes: tuple[np.ndarray, np.ndarray]
    signatures: tuple[np.ndarray, np.ndarray]
    chars: tuple[np.ndarray, np.ndarray]
    tokens: tuple[np.ndarray, np.ndarray]
    texts: tuple[list[str], list[str]] | None  # only for the embedding method


def _batches(reader: PairReader) -> Iterator[list[Example]]:
    batch: list[Example] = []
    for example in reader:
        batch.append(example)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _scan(config: PrepConfig, counter: TokenCounter) -> _Fingerprints:
    from tqdm.auto import tqdm

    hasher = MinHasher()
    keep_texts = config.near_dup_method == "embedding"
    parts: dict[str, list[np.ndarray]] = {}
    texts: tuple[list[str], list[str]] = ([], [])
    progress = tqdm(desc="prep: reading", unit=" pairs", disable=None)
    for batch in _batches(PairReader(config.data, allow_empty=True)):
        rows = [_normalized(example) for example in batch]
        columns: dict[str, np.ndarray] = {
            "status": np.array([_first_reason(row, config) for row in rows], dtype=np.int8),
            "line": np.array([example.line for example in batch], dtype=np.int64),
            "pair_hash": np.array([_digest(*row) for row in rows], dtype=np.uint64),
        }
        for side, side_texts in enumerate(([row[0] for row in rows], [row[1] for row in rows])):
            columns[f"hash{side}"] = np.array([_digest(text) for text in side_texts], dtype=np.uint64)
            columns[f"sig{side}"] = hasher.signatures([matching_form(text) for text in side_texts])
            columns[f"chars{side}"] = np.array([len(text) for text in side_texts], dtype=np.int32)
            columns[f"tokens{side}"] = counter.count(side_texts)
            if keep_texts:
                texts[side].extend(side_texts)
        for name, values in columns.items():
            parts.setdefault(name, []).append(values)
        progress.update(len(batch))
    progress.close()
    joined = {name: np.concatenate(values) for name, values in parts.items()}
    return _Fingerprints(
        status=joined["status"],
        line=joined["line"],
        pair_hash=joined["pair_hash"],
        side_hashes=(joined["hash0"], joined["hash1"]),
        signatures=(joined["sig0"], joined["sig1"]),
        chars=(joined["chars0"], joined["chars1"]),
        tokens=(joined["tokens0"], joined["tokens1"]),
        texts=texts if keep_texts else None,
    )


def _side_similarities(config: PrepConfig, prints: _Fingerprints, rows: np.ndarray) -> list[Any]:
    if config.near_dup_method == "minhash":
        return [MinHashSimilarity(signatures[rows]) for signatures in prints.signatures]
    from embedops.data.encoding import encode
    from embedops.models import load

    model = load(config.model)
    similarities = []
    for side, side_texts in zip(("anchors", "positives"), prints.texts or (), strict=False):
        texts = [side_texts[row] for row in rows]
        embeddings = encode(
            model, texts, label=f"prep: encoding {side}", batch_size=config.batch_size, normalize_embeddings=True
        )
        similarities.append(EmbeddingSimilarity(embeddings.astype(np.float32), config.near_dup_threshold))
    return similarities


def _decide(config: PrepConfig, prints: _Fingerprints) -> tuple[np.ndarray, int]:
    """Fill in duplicates and the split; returns, per row, the row it duplicates (-1), and the group count."""
    status = prints.status
    duplicate_of = np.full(len(status), -1, dtype=np.int64)
    valid = np.flatnonzero(status == TRAIN)
    exact = exact_duplicates(prints.pair_hash[valid])
    status[valid[exact >= 0]] = EXACT
    duplicate_of[valid[exact >= 0]] = valid[exact[exact >= 0]]
    unique = valid[exact < 0]
    if len(unique) == 0:
        return duplicate_of, 0
    anchor, positive = _side_similarities(config, prints, unique)
    near = near_duplicates(anchor, positive, len(unique), config.near_dup_threshold)
    is_near = near.duplicate_of >= 0
    status[unique[is_near]] = NEAR
    duplicate_of[unique[is_near]] = unique[near.duplicate_of[is_near]]

    kept = unique[~is_near]
    position = np.full(len(unique), -1, dtype=np.int64)
    position[~is_near] = np.arange(len(kept))
    left, right = position[near.related_left], position[near.related_right]
    both = (left >= 0) & (right >= 0)
    groups = related_groups(len(kept), left[both], right[both], *(hashes[kept] for hashes in prints.side_hashes))
    in_eval = group_split(groups, prints.pair_hash[kept], config.eval_fraction, config.seed)
    status[kept[in_eval]] = EVAL
    return duplicate_of, int(groups.max()) + 1 if len(groups) else 0


def _write(config: PrepConfig, prints: _Fingerprints, duplicate_of: np.ndarray, files: AtomicFiles) -> None:
    train = PairWriter(files.open(config.output), config.output)
    evaluation = PairWriter(files.open(config.eval_output), config.eval_output) if config.eval_fraction else None
    removed = files.open(config.removed) if config.removed else None
    for index, example in enumerate(PairReader(config.data, allow_empty=True)):
        decision = prints.status[index]
        if decision in (TRAIN, EVAL):
            writer = train if decision == TRAIN or evaluation is None else evaluation
            writer.write(*_normalized(example))
        elif removed is not None:
            record = {"line": example.line, "reason": REASONS[int(decision)]}
            if duplicate_of[index] >= 0:
                record["duplicate_of_line"] = int(prints.line[duplicate_of[index]])
            record.update(anchor=example.anchor, positive=example.positive)
            if example.negative is not None:
                record["negative"] = example.negative
            removed.write(json.dumps(record, ensure_ascii=False) + "\n")


def prep(config: PrepConfig) -> PrepResult:
    """Clean `config.data` into `config.output` (+ its eval split, report and length plot)."""
    from embedops.models import resolve

    with AtomicFiles(force=config.force) as files:
        for target in (config.output, config.eval_output, config.report_output, config.plot_output):
            files.check(target)
        if config.removed:
            files.check(config.removed)
        model = resolve(config.model)
        counter = TokenCounter(model.path)
        prints = _scan(config, counter)
        duplicate_of, groups = _decide(config, prints)
        status = prints.status
        _write(config, prints, duplicate_of, files)

        kept = np.flatnonzero((status == TRAIN) | (status == EVAL))
        lengths = length_report(
            [chars[kept] for chars in prints.chars],
            [tokens[kept] for tokens in prints.tokens],
            counter.unit,
            model.manifest.max_seq_length,
        )
        counts = Counter(int(value) for value in status)
        result = PrepResult(
            rows=len(status),
            train=counts[TRAIN],
            eval=counts[EVAL],
            removed={reason: counts[code] for code, reason in REASONS.items()},
            groups=groups,
            lengths=lengths,
        )
        outputs = [config.output, config.eval_output if config.eval_fraction else None, config.report_output]
        if plot_lengths(files.temp_path(config.plot_output), [t[kept] for t in prints.tokens], counter.unit):
            outputs.append(config.plot_output)
        else:
            files.discard(config.plot_output)
        outputs.append(config.removed)
        result.files = {path.name: str(path) for path in outputs if path is not None}
        with files.open(config.report_output) as report:
            json.dump(result.to_dict(), report, indent=2)
        files.commit()
    return result
