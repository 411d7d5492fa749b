"""Training/evaluation data: readers with file:line validation (no torch imports here)."""

from embedops.data.readers import Example, PairReader, ReadStats, read_examples

__all__ = ["Example", "PairReader", "ReadStats", "read_examples"]
