"""MinHash signatures over character shingles and LSH banding, in numpy.

Hand-written (datasketch is not a dependency) and vectorised over whole batches of texts, because
a per-text Python loop would dominate the run time of `prep` on a million pairs. Only the lowest
8 bits of each minimum are kept ("b-bit MinHash"): 64 bytes per text, so signatures for millions
of texts fit in memory while the texts themselves are streamed and forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NUM_PERM = 64
BAND_ROWS = 8  # 8 bands of 8 rows: a pair at Jaccard 0.9 shares a band with probability 0.99.
SHINGLE = 3
_BIT_MATCH = 1 / 256  # chance that two different 8-bit minima agree by accident
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_SHINGLE_BASE = np.uint64(0x100000001B3)
_CHUNK_SHINGLES = 1 << 15


class MinHasher:
    """k universal hash functions h(x) = (a*x + b) mod 2^64 >> 32 (multiply-add-shift), fixed by seed."""

    def __init__(self, num_perm: int = NUM_PERM, shingle: int = SHINGLE, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 2**63, size=(num_perm, 1), dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**63, size=(num_perm, 1), dtype=np.uint64)
        self.shingle = shingle

    def _shingle_hashes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """32-bit hashes of every character k-gram, concatenated, with each text's start offset."""
        k = self.shingle
        padded = [text.ljust(k, "\0") for text in texts]
        lengths = np.fromiter((len(text) for text in padded), dtype=np.int64, count=len(padded))
        codes = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        counts = lengths - k + 1
        text_starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
        positions = np.arange(counts.sum()) - np.repeat(offsets - text_starts, counts)
        with np.errstate(over="ignore"):
            hashes = np.zeros(len(positions), dtype=np.uint64)
            for shift in range(k):
                hashes = (hashes * _SHINGLE_BASE) ^ codes[positions + shift]
            hashes ^= hashes >> np.uint64(29)
            hashes = (hashes * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        return hashes >> np.uint64(32), offsets

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), num_perm) uint8: the low byte of each permutation's minimum shingle hash."""
        parts = [np.zeros((0, len(self.a)), dtype=np.uint8)]
        # Chunks of texts keep the (shingles x permutations) matrix near _CHUNK_SHINGLES x 64 x 8 bytes.
        step = max(1, _CHUNK_SHINGLES // max(1, sum(len(text) for text in texts) // max(1, len(texts))))
        for start in range(0, len(texts), step):
            hashes, offsets = self._shingle_hashes(texts[start : start + step])
            with np.errstate(over="ignore"):
                permuted = (hashes[:, None] * self.a.T + self.b.T) >> np.uint64(32)
            minima = np.minimum.reduceat(permuted, offsets, axis=0)
            parts.append((minima & np.uint64(0xFF)).astype(np.uint8))
        return np.concatenate(parts)


def band_keys(signatures: np.ndarray) -> np.ndarray:
    """(n, bands) uint64: each band's 8 bytes read as one key; equal keys make a candidate pair."""
    return np.ascontiguousarray(signatures).view(np.uint64).reshape(len(signatures), -1)


def candidate_pairs(signatures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) that share at least one band: each row is paired with the first row of its bucket."""
    keys = band_keys(signatures)
    firsts, seconds = [], []
    for band in keys.T:
        order = np.argsort(band, kind="stable")
        ordered = band[order]
        new_bucket = np.concatenate(([True], ordered[1:] != ordered[:-1]))
        heads = order[np.maximum.accumulate(np.where(new_bucket, np.arange(len(order)), 0))]
        member = ~new_bucket
        firsts.append(heads[member])
        seconds.append(order[member])
    if not firsts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    pairs = np.unique(np.stack([np.concatenate(firsts), np.concatenate(seconds)]), axis=1)
    low, high = np.minimum(pairs[0], pairs[1]), np.maximum(pairs[0], pairs[1])
    return low, high


def estimated_jaccard(signatures: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Jaccard similarity of each (left[i], right[i]) estimated from signatures, corrected for 8-bit collisions."""
    agree = (signatures[left] == signatures[right]).mean(axis=1)
    return np.clip((agree - _BIT_MATCH) / (1 - _BIT_MATCH), 0.0, 1.0)
