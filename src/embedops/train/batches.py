"""Batches for several processes: one process's batch of world_size x batch_size, cut into equal parts.

A module of its own because it subclasses sentence-transformers' sampler (a heavy import), and is
imported only once a multi-process run builds its trainer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sentence_transformers.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler


class _EpochRelay:
    """accelerate's shard wrapper has no set_epoch; it passes the epoch on only to `batch_sampler.sampler`."""

    def __init__(self, owner: ProcessSplitBatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class ProcessSplitBatchSampler(DefaultBatchSampler):
    """No-duplicates batches of world_size x batch_size, each cut into world_size consecutive parts.

    accelerate hands the i-th batch of every group of world_size to rank i, so the gathered batch of a
    step is exactly the one a single process with the whole batch would draw (same order, same
    no-duplicates guarantee across processes), and every rank gets the same number of steps: a tail
    too short for every rank to get a row is dropped, never given to some ranks only (which would leave
    the others waiting in a collective).
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: Any = None,
        seed: int = 0,
    ) -> None:
        import torch.distributed as dist

        super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.whole = NoDuplicatesBatchSampler(
            dataset, batch_size * self.world_size, drop_last, valid_label_columns, generator, seed
        )
        self.rows = len(dataset)
        self.sampler = _EpochRelay(self)  # type: ignore[assignment]
        # None: accelerate then yields every part as it comes, not only groups whose last part is full.
        self.batch_size = None  # type: ignore[assignment]

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.whole.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.whole:
            if len(batch) >= self.world_size:
                yield from split_evenly(batch, self.world_size)

    def __len__(self) -> int:
        full, rest = divmod(self.rows, self.whole.batch_size)
        return self.world_size * (full + (1 if rest >= self.world_size and not self.drop_last else 0))


def split_evenly(batch: list[int], parts: int) -> list[list[int]]:
    """`batch` in `parts` consecutive pieces whose sizes differ by at most one, the larger first."""
    size, extra = divmod(len(batch), parts)
    pieces, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        pieces.append(batch[start:end])
        start = end
    return pieces
