"""Vectors in fewer bytes: int8 and uint8 (per-dimension calibration ranges), binary and ubinary
(packed sign bits), as stored by `embedops embed` and returned by the server on request.

They follow sentence-transformers' `quantize_embeddings` ("int8", "uint8", "binary", "ubinary"), so a
vector store built for those reads ours; int8 and uint8 round to the nearest step and clip values
outside the calibration ranges, where sentence-transformers truncates and lets them wrap around.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where vectors are made: `embedops --help` reads STORAGE_DTYPES
    import numpy as np

STORAGE_DTYPES = ("float32", "float16", "int8", "binary")
# What the server returns on request: sentence-transformers' precisions.
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
RANGES_FILE = "output_ranges.json"  # in an artifact: the int8/uint8 calibration ranges of its vectors


@dataclass(frozen=True)
class Int8Ranges:
    """Per-dimension [low, high] mapped onto the 256 int8 steps; taken from a calibration sample."""

    low: list[float]
    high: list[float]

    @classmethod
    def of(cls, vectors: np.ndarray) -> Int8Ranges:
        return cls(vectors.min(axis=0).astype(float).tolist(), vectors.max(axis=0).astype(float).tolist())

    def quantize(self, vectors: np.ndarray, *, unsigned: bool = False) -> np.ndarray:
        """int8 codes (-128 at `low`, 127 at `high`), or uint8 ones (0 to 255); the first
        `vectors.shape[1]` dimensions' ranges serve vectors cut short (`dimensions`)."""
        import numpy as np

        width = vectors.shape[-1]
        low = np.asarray(self.low[:width], dtype=np.float32)
        steps = (np.asarray(self.high[:width], dtype=np.float32) - low) / 255
        steps[steps == 0] = 1.0  # a constant dimension maps to the lowest code
        scaled = np.rint((vectors - low) / steps)
        if unsigned:
            return np.clip(scaled, 0, 255).astype(np.uint8)
        return np.clip(scaled - 128, -128, 127).astype(np.int8)


def write_ranges(directory: Path, ranges: Int8Ranges, *, texts: int, source: str) -> None:
    """`ranges` into an artifact's `RANGES_FILE`, with how many texts of which source measured them."""
    from embedops.files import write_text_atomically

    record = {"low": ranges.low, "high": ranges.high, "texts": texts, "source": source}
    write_text_atomically(directory / RANGES_FILE, json.dumps(record))


def read_ranges(directory: Path) -> tuple[Int8Ranges, str] | None:
    """An artifact's ranges and where they came from, or None when it has none."""
    path = directory / RANGES_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return Int8Ranges(record["low"], record["high"]), f"artifact ({record['texts']} texts, {record['source']})"


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
    if dtype in ("int8", "binary"):  # stored binary is sentence-transformers' ubinary
        return quantize_embeddings(vectors, "ubinary" if dtype == "binary" else dtype, ranges)
    raise ValueError(f"unknown storage dtype {dtype!r}")


def quantize_embeddings(vectors: np.ndarray, precision: str, ranges: Int8Ranges | None = None) -> np.ndarray:
    """`vectors` (float32 rows) in one of `PRECISIONS`; int8 and uint8 need the calibration `ranges`.

    binary is the packed sign bits shifted into int8 (-128 to 127), ubinary the same bits as uint8.
    """
    import numpy as np

    if precision == "float32":
        return vectors.astype(np.float32, copy=False)
    if precision in ("int8", "uint8"):
        if ranges is None:
            raise ValueError(f"{precision} vectors need calibration ranges")
        return ranges.quantize(vectors, unsigned=precision == "uint8")
    if precision in ("binary", "ubinary"):
        packed = np.packbits(vectors > 0, axis=-1)
        return packed if precision == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    raise ValueError(f"unknown precision {precision!r}")
