"""How vectors are stored: float32, float16, int8 (per-dimension ranges) or binary (packed sign bits).

int8 and binary follow sentence-transformers' `quantize_embeddings` ("int8" and "ubinary"), so a
vector store built for those reads ours; int8 clips values outside the calibration ranges instead of
letting them wrap around.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where vectors are made: `embedops --help` reads STORAGE_DTYPES
    import numpy as np

STORAGE_DTYPES = ("float32", "float16", "int8", "binary")


@dataclass(frozen=True)
class Int8Ranges:
    """Per-dimension [low, high] mapped onto the 256 int8 steps; taken from a calibration sample."""

    low: list[float]
    high: list[float]

    @classmethod
    def of(cls, vectors: np.ndarray) -> Int8Ranges:
        return cls(vectors.min(axis=0).astype(float).tolist(), vectors.max(axis=0).astype(float).tolist())

    def quantize(self, vectors: np.ndarray) -> np.ndarray:
        import numpy as np

        low = np.asarray(self.low, dtype=np.float32)
        steps = (np.asarray(self.high, dtype=np.float32) - low) / 255
        steps[steps == 0] = 1.0  # a constant dimension maps to -128
        scaled = (vectors - low) / steps - 128
        return np.clip(np.rint(scaled), -128, 127).astype(np.int8)


def stored_width(dim: int, dtype: str) -> int:
    """Values per stored vector: `dim`, or bytes of packed bits for binary."""
    return (dim + 7) // 8 if dtype == "binary" else dim


def to_storage(vectors: np.ndarray, dtype: str, ranges: Int8Ranges | None = None) -> np.ndarray:
    """`vectors` (float32) in the stored dtype; int8 needs the calibration `ranges`."""
    import numpy as np

    if dtype == "float32":
        return vectors.astype(np.float32, copy=False)
    if dtype == "float16":
        return vectors.astype(np.float16)
    if dtype == "int8":
        if ranges is None:
            raise ValueError("int8 storage needs calibration ranges")
        return ranges.quantize(vectors)
    if dtype == "binary":
        return np.packbits(vectors > 0, axis=-1)
    raise ValueError(f"unknown storage dtype {dtype!r}")
