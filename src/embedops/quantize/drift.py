"""How far a quantized model's embeddings moved from its source's, on a sample of texts.

Two views: per-text cosine between the two embeddings of the same text (mean, 5th percentile,
minimum), and retrieval stability, the share of each text's 10 nearest neighbours within the sample
that both models agree on. Drift, the gated number, is 1 - mean cosine.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from embedops.data import PairReader

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BUILT_IN = "built-in"
NEIGHBOURS = 10


@dataclass(frozen=True)
class DriftReport:
    samples: int
    source: str
    mean_cosine: float
    p5_cosine: float
    min_cosine: float
    top10_overlap: float

    @property
    def drift(self) -> float:
        return 1.0 - self.mean_cosine

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "drift": round(self.drift, 6)}

    def verdict(self, max_drift: float | None) -> str:
        """One line a person can act on: the numbers, and whether the gate (if any) held."""
        numbers = (
            f"drift {self.drift:.4f} (mean cosine {self.mean_cosine:.4f}, p5 {self.p5_cosine:.4f}, "
            f"min {self.min_cosine:.4f}), top-{NEIGHBOURS} neighbour overlap {self.top10_overlap:.1%} "
            f"on {self.samples} {self.source} texts"
        )
        if max_drift is None:
            return f"measured: {numbers}"
        if self.drift > max_drift:
            return f"FAILED: {numbers} exceeds --max-drift {max_drift}"
        return f"passed: {numbers} within --max-drift {max_drift}"


def built_in_texts() -> list[str]:
    text = resources.files("embedops").joinpath("resources/drift_sentences.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def sample_texts(check_data: str | Path | None, limit: int, seed: int = 0) -> tuple[list[str], str]:
    """Texts to compare on: the user's pairs file (all of its distinct texts) or the built-in set.

    A larger file is sampled with a fixed seed, so two runs on the same file measure the same texts.
    """
    if check_data is None:
        texts, source = built_in_texts(), BUILT_IN
    else:
        seen: dict[str, None] = {}
        for example in PairReader(check_data):
            for text in (example.anchor, example.positive, example.negative):
                if text:
                    seen.setdefault(text)
        texts, source = list(seen), str(check_data)
    if len(texts) > limit:
        texts = random.Random(seed).sample(texts, limit)
    return texts, source


def measure_drift(
    reference: SentenceTransformer,
    candidate: SentenceTransformer,
    texts: list[str],
    source: str,
    batch_size: int = 32,
) -> DriftReport:
    import numpy as np

    from embedops.data.encoding import encode

    def vectors(model: SentenceTransformer, label: str) -> np.ndarray:
        # prompt="": both sides embed the texts as the server does, whatever default prompt the model sets.
        return encode(
            model, texts, label=label, batch_size=batch_size, leave=False, normalize_embeddings=True, prompt=""
        )

    before = vectors(reference, "quantize: drift, source").astype(np.float64)
    after = vectors(candidate, "quantize: drift, quantized").astype(np.float64)
    cosines = np.sum(before * after, axis=1)
    k = min(NEIGHBOURS, len(texts) - 1)
    return DriftReport(
        samples=len(texts),
        source=source,
        mean_cosine=round(float(cosines.mean()), 6),
        p5_cosine=round(float(np.percentile(cosines, 5)), 6),
        min_cosine=round(float(cosines.min()), 6),
        top10_overlap=round(_neighbour_overlap(before, after, k), 6),
    )


def _neighbour_overlap(before, after, k: int) -> float:
    """Mean share of each text's k nearest neighbours (itself excluded) that both embeddings agree on."""
    import numpy as np

    def neighbours(vectors: np.ndarray) -> np.ndarray:
        similarities = vectors @ vectors.T
        np.fill_diagonal(similarities, -np.inf)
        return np.argsort(-similarities, axis=1)[:, :k]

    ours, theirs = neighbours(before), neighbours(after)
    shared = [len(set(a) & set(b)) for a, b in zip(ours, theirs, strict=True)]
    return float(np.mean(shared)) / k
