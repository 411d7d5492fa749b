"""`mine(config)`: add hard negatives to (anchor, positive) pairs, retrieved with the base model.

Hand-written rather than `sentence_transformers.util.mine_hard_negatives` (whose recipe this follows:
rank window, relative margin, top or random sampling) for two reasons: in the pinned 5.1.2 its margin
guard reads the wrong positive score once anchors have different numbers of positives (the running
offset advances by the previous anchor's count), which WikiQA-style data has; and without faiss it
scores every anchor against the whole corpus at once, where blocked products keep memory flat.
Encoding is still sentence-transformers'.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedops.configs import FromFlags
from embedops.data.corpus import read_corpus
from embedops.data.encoding import encode
from embedops.data.neighbours import top_k_blocks
from embedops.data.outputs import AtomicFiles, PairWriter
from embedops.data.readers import PairReader, detect_format
from embedops.errors import ConfigError, DataError

SAMPLING = ("top", "random")
# A pair whose rank window yields no negative (every near neighbour scores above its positive, common
# where positives are only loosely similar: climate-fever's claim -> evidence pairs got one for 660 of
# 1,670) gets a random passage instead of being dropped: "random" keeps every pair, "drop" leaves it out.
FILL = ("random", "drop")
_FILL_DRAWS = 50
MAX_NEGATIVES = 10


@dataclass
class MineConfig(FromFlags):
    """What `mine` was asked to do; `embedops mine` fills it with `from_flags`."""

    data: Path
    output: Path
    corpus: Path | None = None
    model: str = ""  # "": the bundled base model
    num_negatives: int = 1
    range_min: int = 10
    range_max: int = 100
    relative_margin: float = 0.05
    sampling: str = "top"
    fill: str = "random"
    batch_size: int = 64
    seed: int = 42
    device: str | None = None
    skip_invalid: bool = False
    force: bool = False

    def __post_init__(self) -> None:
        from embedops.models import DEFAULT_MODEL

        self.data, self.output = Path(self.data), Path(self.output)
        self.corpus = Path(self.corpus) if self.corpus else None
        self.model = self.model or DEFAULT_MODEL
        checks = [
            (
                1 <= self.num_negatives <= MAX_NEGATIVES,
                f"--num-negatives must be 1..{MAX_NEGATIVES}, got {self.num_negatives}",
            ),
            (self.range_min >= 0, f"--range-min must not be negative, got {self.range_min}"),
            (
                self.range_max - self.range_min >= self.num_negatives,
                f"--range-max ({self.range_max}) - --range-min ({self.range_min}) leaves fewer ranks "
                f"than --num-negatives ({self.num_negatives})",
            ),
            (0 <= self.relative_margin < 1, f"--relative-margin must be in [0, 1), got {self.relative_margin}"),
            (self.sampling in SAMPLING, f"--sampling must be one of {', '.join(SAMPLING)}"),
            (self.fill in FILL, f"--fill must be one of {', '.join(FILL)}"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.data.absolute() != self.output.absolute(), "--output must not be the input file"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        detect_format(self.output)


@dataclass
class MineResult:
    pairs: int
    anchors: int
    corpus: int
    triplets: int
    negatives_per_pair: dict[int, int]  # how many pairs got 0, 1, … mined negatives
    skipped_by_margin: int  # candidates in the rank window dropped as likely unlabelled positives
    mean_positive_score: float
    mean_negative_score: float | None
    filled: int = 0  # pairs given random negatives because mining found too few (fill="random")
    output: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_negatives(
    indices: np.ndarray,
    scores: np.ndarray,
    exclude: set[int],
    hardest_positive: float,
    config: MineConfig,
    rng: random.Random,
) -> tuple[list[tuple[int, float]], int]:
    """Pick negatives from one anchor's ranking (best first): ranks [range_min, range_max) of the
    ranking without its known positives, minus candidates scoring above (1 - margin) x its hardest
    positive (the false-negative guard). Returns the chosen (index, score) and how many the guard skipped."""
    ranked = [(int(i), float(s)) for i, s in zip(indices, scores, strict=True) if int(i) not in exclude]
    window = ranked[config.range_min : config.range_max]
    ceiling = hardest_positive * (1 - config.relative_margin)
    allowed = [(index, score) for index, score in window if score <= ceiling]
    skipped = len(window) - len(allowed)
    if config.sampling == "random" and len(allowed) > config.num_negatives:
        allowed = sorted(rng.sample(allowed, config.num_negatives), key=lambda item: -item[1])
    return allowed[: config.num_negatives], skipped


def random_negatives(
    count: int, exclude: set[int], scores_of: Any, ceiling: float, corpus_size: int, rng: random.Random
) -> list[tuple[int, float]]:
    """`count` random passages that are not known positives, preferring ones under the guard's ceiling."""
    candidates = [i for i in (rng.randrange(corpus_size) for _ in range(_FILL_DRAWS)) if i not in exclude]
    candidates = list(dict.fromkeys(candidates))
    scored = [(index, float(score)) for index, score in zip(candidates, scores_of(candidates), strict=True)]
    under = [item for item in scored if item[1] <= ceiling]
    return (under + [item for item in scored if item[1] > ceiling])[:count]


def _read_pairs(config: MineConfig) -> list[tuple[str, str]]:
    reader = PairReader(config.data, skip_invalid=config.skip_invalid)
    pairs = []
    for example in reader:
        if example.negative is not None:
            raise DataError(config.data, example.line, "already holds a negative; mine takes (anchor, positive) pairs")
        pairs.append((example.anchor, example.positive))
    return pairs


def _encode(model: Any, texts: list[str], batch_size: int, label: str) -> np.ndarray:
    return encode(model, texts, label=label, batch_size=batch_size, normalize_embeddings=True).astype(np.float32)


def mine(config: MineConfig) -> MineResult:
    """Write (anchor, positive, negative) lines for the pairs of `config.data` to `config.output`."""
    from tqdm.auto import tqdm

    from embedops.models import load, resolve

    with AtomicFiles(force=config.force) as files:
        files.check(config.output)
        pairs = _read_pairs(config)
        passages = read_corpus(config.corpus) if config.corpus else []
        model_ref = resolve(config.model)
        corpus = list(dict.fromkeys(passages + [positive for _, positive in pairs]))
        corpus_id = {text: index for index, text in enumerate(corpus)}
        anchors = list(dict.fromkeys(anchor for anchor, _ in pairs))
        anchor_id = {text: index for index, text in enumerate(anchors)}
        positives: dict[int, set[int]] = defaultdict(set)
        for anchor, positive in pairs:
            positives[anchor_id[anchor]].add(corpus_id[positive])

        model = load(model_ref, device=config.device)
        anchor_vectors = _encode(model, anchors, config.batch_size, "mine: encoding anchors")
        corpus_vectors = _encode(model, corpus, config.batch_size, "mine: encoding passages")
        positive_scores = np.array(
            [anchor_vectors[anchor_id[a]] @ corpus_vectors[corpus_id[p]] for a, p in pairs], dtype=np.float32
        )
        hardest = np.full(len(anchors), np.inf, dtype=np.float32)
        np.minimum.at(hardest, [anchor_id[a] for a, _ in pairs], positive_scores)

        rng = random.Random(config.seed)
        widest = max(len(ids) for ids in positives.values()) + 1  # + the anchor's own text, if in the corpus
        chosen: list[list[tuple[int, float]]] = []
        skipped = 0
        blocks = top_k_blocks(anchor_vectors, corpus_vectors, config.range_max + widest)
        for block, indices, scores in tqdm(blocks, desc="mine: ranking", unit=" blocks", disable=None):
            for row in range(block.start, block.stop):
                exclude = positives[row] | ({corpus_id[anchors[row]]} if anchors[row] in corpus_id else set())
                picked, dropped = select_negatives(
                    indices[row - block.start], scores[row - block.start], exclude, float(hardest[row]), config, rng
                )
                chosen.append(picked)
                skipped += dropped

        mined_count = [len(picked) for picked in chosen]
        if not any(mined_count):  # a window past the corpus: filling would hide it
            raise ConfigError(
                f"no pair got a negative from {len(corpus)} passages with ranks {config.range_min}-"
                f"{config.range_max} and margin {config.relative_margin}: give a larger --corpus, "
                "or lower --range-min / --relative-margin"
            )
        if config.fill == "random":
            for row, picked in enumerate(chosen):
                missing = config.num_negatives - len(picked)
                if missing <= 0:
                    continue
                exclude = positives[row] | {index for index, _ in picked}
                exclude |= {corpus_id[anchors[row]]} if anchors[row] in corpus_id else set()
                vector = anchor_vectors[row]
                picked += random_negatives(
                    missing,
                    exclude,
                    lambda ids, v=vector: corpus_vectors[ids] @ v,
                    float(hardest[row]) * (1 - config.relative_margin),
                    len(corpus),
                    rng,
                )
        writer = PairWriter(files.open(config.output), config.output)
        per_pair: Counter[int] = Counter()
        negative_scores = []
        filled = triplets = 0
        for anchor, positive in pairs:
            row = anchor_id[anchor]
            picked = chosen[row]
            per_pair[mined_count[row]] += 1
            filled += len(picked) > mined_count[row]
            triplets += len(picked)
            for index, _ in picked:
                writer.write(anchor, positive, corpus[index])
            negative_scores += [score for _, score in picked[: mined_count[row]]]
        files.commit()
    settings = {k: v for k, v in asdict(config).items() if k not in ("data", "output", "corpus", "force")}
    return MineResult(
        pairs=len(pairs),
        anchors=len(anchors),
        corpus=len(corpus),
        triplets=triplets,
        negatives_per_pair=dict(sorted(per_pair.items())),
        skipped_by_margin=skipped,
        filled=filled,
        mean_positive_score=round(float(positive_scores.mean()), 4),
        mean_negative_score=round(float(np.mean(negative_scores)), 4) if negative_scores else None,
        output=str(config.output),
        settings=settings,
    )
