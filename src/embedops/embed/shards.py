"""Parquet shards of (id, vector): written whole or not at all, each stamped with its plan and index.

A vector column is a fixed-size list, so readers (pyarrow, DuckDB, LanceDB, pandas) see one array of
`width` values per row without parsing anything.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from embedops.errors import MissingDependencyError
from embedops.files import atomic_path

PLAN_KEY = b"embedops.plan"
SHARD_KEY = b"embedops.shard"


def _pyarrow() -> tuple[ModuleType, ModuleType]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependencyError("pyarrow", "embed") from exc
    return pa, pq


def write_shard(path: Path, ids: list[str], vectors: np.ndarray, *, plan: str, index: int) -> None:
    """Write one shard to a temp file and rename it into place."""
    pa, pq = _pyarrow()
    width = vectors.shape[1]
    column = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors).reshape(-1)), width)
    table = pa.table({"id": pa.array(ids, pa.string()), "vector": column})
    table = table.replace_schema_metadata({PLAN_KEY: plan.encode(), SHARD_KEY: str(index).encode()})
    with atomic_path(path) as staging:
        pq.write_table(table, staging)


def shard_matches(path: Path, *, plan: str, index: int, rows: int) -> bool:
    """Whether `path` is shard `index` of `plan` with all its `rows` (a file of any other run is not)."""
    _, pq = _pyarrow()
    try:
        metadata = pq.read_metadata(path)
    except (OSError, ValueError):
        return False
    stamp = metadata.metadata or {}
    return (
        stamp.get(PLAN_KEY) == plan.encode()
        and stamp.get(SHARD_KEY) == str(index).encode()
        and metadata.num_rows == rows
    )


def read_vectors(paths: list[Path]) -> tuple[list[str], np.ndarray]:
    """Ids and vectors of the given shards, in order (for checks and small corpora: it is all in memory)."""
    _, pq = _pyarrow()
    ids: list[str] = []
    blocks = []
    for path in paths:
        table = pq.read_table(path)
        ids.extend(table.column("id").to_pylist())
        column = table.column("vector").combine_chunks()
        blocks.append(column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size))
    return ids, np.concatenate(blocks) if blocks else np.empty((0, 0), dtype=np.float32)
