"""Length distributions of each side of a pairs file, and the warning the seed's tip asks for:
when one side is systematically much longer, a model can learn "long text = answer" instead of meaning."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Median length ratio (positive / anchor, in tokens) beyond which we warn, either way round.
SKEW_RATIO = 3.0
SIDES = ("anchor", "positive")


class TokenCounter:
    """Counts tokens with the base model's fast tokenizer (what truncation will see), else whitespace words."""

    def __init__(self, model_dir: Path | None) -> None:
        self.tokenizer = None
        self.unit = "words"
        tokenizer_file = model_dir / "tokenizer.json" if model_dir else None
        if tokenizer_file and tokenizer_file.is_file():
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
            self.tokenizer.no_truncation()
            self.tokenizer.no_padding()
            self.unit = "tokens"

    def count(self, texts: Sequence[str]) -> np.ndarray:
        if self.tokenizer is None:
            return np.fromiter((len(text.split()) for text in texts), dtype=np.int32, count=len(texts))
        encodings = self.tokenizer.encode_batch_fast(list(texts))  # no character offsets: faster
        return np.fromiter((len(encoding.ids) for encoding in encodings), dtype=np.int32, count=len(texts))


def _distribution(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return {
        "mean": round(float(values.mean()), 1),
        "p5": float(p5),
        "p50": float(p50),
        "p95": float(p95),
        "max": int(values.max()),
    }


def length_report(
    chars: Sequence[np.ndarray], tokens: Sequence[np.ndarray], unit: str, max_seq_length: int | None
) -> dict[str, Any]:
    """Distributions per side, the positive/anchor ratio, and warnings; `chars`/`tokens` are (anchor, positive)."""
    report: dict[str, Any] = {"unit": unit, "warnings": []}
    for side, side_chars, side_tokens in zip(SIDES, chars, tokens, strict=True):
        report[side] = {"chars": _distribution(side_chars), unit: _distribution(side_tokens)}
        if max_seq_length and unit == "tokens":
            over = int((side_tokens > max_seq_length).sum())
            report[side]["over_max_seq_length"] = over
            if over:
                report["warnings"].append(
                    f"{over} {side} text(s) exceed the model's {max_seq_length} tokens and will be truncated"
                )
    anchor_tokens, positive_tokens = tokens
    if len(anchor_tokens) == 0:
        return report
    ratio = np.maximum(positive_tokens, 1) / np.maximum(anchor_tokens, 1)
    median = float(np.median(ratio))
    report["ratio"] = {
        "median": round(median, 2),
        "p5": round(float(np.percentile(ratio, 5)), 2),
        "p95": round(float(np.percentile(ratio, 95)), 2),
    }
    if median >= SKEW_RATIO or median <= 1 / SKEW_RATIO:
        longer, shorter = ("positive", "anchor") if median > 1 else ("anchor", "positive")
        factor = median if median > 1 else 1 / median
        report["warnings"].append(
            f"length bias: the {longer} is typically {factor:.1f}x longer than the {shorter} "
            f"(median {unit} ratio); a model can learn length instead of meaning. Expected for "
            "question -> passage data; otherwise balance lengths"
        )
    return report


def plot_lengths(path: Path, tokens: Sequence[np.ndarray], unit: str) -> bool:
    """Histogram PNG of each side's length and of the ratio; False when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    anchor_tokens, positive_tokens = tokens
    figure, (lengths_axis, ratio_axis) = plt.subplots(1, 2, figsize=(10, 3.5), dpi=110)
    upper = max(1, int(np.percentile(np.concatenate(tokens), 99.5)) if len(anchor_tokens) else 1)
    bins = np.linspace(0, upper, 41)
    for side, values in zip(SIDES, tokens, strict=True):
        lengths_axis.hist(np.minimum(values, upper), bins=bins, alpha=0.55, label=side)
    lengths_axis.set_xlabel(f"length ({unit})")
    lengths_axis.set_ylabel("pairs")
    lengths_axis.legend()
    lengths_axis.set_title("Length of each side")
    ratio = np.log2(np.maximum(positive_tokens, 1) / np.maximum(anchor_tokens, 1))
    ratio_axis.hist(ratio, bins=40, color="tab:green")
    ratio_axis.axvline(0, color="black", linewidth=0.8)
    ratio_axis.set_xlabel("log2(positive / anchor length)")
    ratio_axis.set_title("Length ratio")
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
    return True
