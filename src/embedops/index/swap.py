"""Load, verify, swap: one transaction per command, so readers see the old version until the commit and
the new one after it, and a failure or a kill at any point leaves the database as it was.

A swap keeps the version it replaces as `previous` (for --rollback) and drops the one before that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from embedops.configs import FromFlags
from embedops.errors import ConfigError, GateFailedError
from embedops.index.embeddings import Embeddings
from embedops.index.exact import METRICS
from embedops.index.pgvector import (
    OPERATORS,
    DatabaseError,
    PgvectorIndex,
    Version,
    check_name,
    connect,
    first_line,
    has_registry,
    list_versions,
    psycopg_module,
)
from embedops.index.verify import CorpusSample, QuerySet, RecallReport, measure_recall, real_queries

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("embedops.index")

DEFAULT_EF_SEARCH = 40  # pgvector's default hnsw.ef_search: what a reader gets without setting it


@dataclass(frozen=True)
class IndexConfig(FromFlags):
    """What `index` was asked to do; `embedops index` fills it with `from_flags`."""

    embeddings: str
    name: str
    db: str = ""
    queries: str | None = None
    min_recall: float = 0.9
    k: int = 10
    sample: int = 200
    metric: str = "cosine"
    ef_search: int = DEFAULT_EF_SEARCH
    force: bool = False

    def check(self) -> None:
        check_name(self.name)
        if self.metric not in METRICS:
            raise ConfigError(f"--metric must be one of {', '.join(METRICS)}, not {self.metric!r}")
        if not 0.0 <= self.min_recall <= 1.0:
            raise ConfigError(f"--min-recall must be between 0 and 1, not {self.min_recall}")
        for flag, value in (("k", self.k), ("sample", self.sample), ("ef-search", self.ef_search)):
            if value < 1:
                raise ConfigError(f"--{flag} must be at least 1, not {value}")


@dataclass
class SwapResult:
    name: str
    unchanged: bool  # the live version already holds this output; nothing was done
    live: Version
    previous: Version | None = None
    dropped: list[str] = field(default_factory=list)
    check: RecallReport | None = None
    load_seconds: float = 0.0
    index_seconds: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def transaction(db: str) -> Iterator[psycopg.Connection[Any]]:
    """One connection, one transaction: committed when the block ends, rolled back on any error."""
    conn = connect(db)
    try:
        with conn.transaction():
            yield conn
    except psycopg_module().Error as exc:
        raise DatabaseError(f"the database refused: {first_line(exc)}; nothing was changed") from exc
    finally:
        conn.close()


def view_comment(version: Version) -> str:
    return (
        f"embedops index {version.name} v{version.version}: model {version.model} "
        f"(fingerprint {version.model_fingerprint[:16]}), {version.rows} rows x {version.dim}, {version.metric} "
        f"distance (ORDER BY embedding {OPERATORS[version.metric]} query), recall@{version.k} {version.recall:.3f}"
    )


def swap(config: IndexConfig) -> SwapResult:
    """Load `config.embeddings` as the next version of `config.name`, verify it, and make it live."""
    config.check()
    started = time.perf_counter()
    corpus = Embeddings.open(config.embeddings)
    query_source = Embeddings.open(config.queries, what="--queries") if config.queries else None
    real = real_queries(query_source, corpus, config.sample) if query_source else None
    with transaction(config.db) as conn:
        index = PgvectorIndex(conn, config.name)
        index.prepare()
        versions = index.versions()
        index.check_ours(versions)
        live = next((item for item in versions if item.state == "live"), None)
        previous = next((item for item in versions if item.state == "previous"), None)
        if live and live.content == corpus.content and live.metric == config.metric and not config.force:
            return SwapResult(config.name, unchanged=True, live=live, previous=previous)
        number = max((item.version for item in versions), default=0) + 1
        table = f"{config.name}_v{number}"
        load_started = time.perf_counter()
        sample = _load(index, table, corpus, None if real else CorpusSample(corpus.count, config.sample))
        rows = index.count(table)
        if rows != corpus.count:
            raise ConfigError(f"{table} holds {rows} rows after loading, embed.json counts {corpus.count}")
        index_started = time.perf_counter()
        logger.info("building the HNSW index on %s (%d rows)", table, rows)
        index.build_index(table, config.metric, rows, corpus.dim)
        index_seconds = time.perf_counter() - index_started
        queries: QuerySet = real if real is not None else _sampled(sample)
        logger.info("checking recall@%d of %d queries against exact search", config.k, len(queries))
        check = measure_recall(
            index, table, queries, corpus, k=config.k, metric=config.metric, ef_search=config.ef_search
        )
        if check.recall < config.min_recall:
            raise GateFailedError(
                f"recall@{config.k} of {table} is {check.recall:.3f} (lowest {check.lowest:.2f}) over "
                f"{check.queries} queries, below --min-recall {config.min_recall}; nothing was changed"
            )
        new = Version(
            name=config.name,
            version=number,
            table_name=table,
            state="live",
            rows=rows,
            dim=corpus.dim,
            metric=config.metric,
            model=corpus.model_name,
            model_fingerprint=corpus.model_fingerprint,
            content=corpus.content,
            embeddings=str(corpus.path.absolute()),
            recall=round(check.recall, 6),
            recall_min=round(check.lowest, 6),
            k=config.k,
            queries=check.queries,
            query_source=queries.source,
            ef_search=config.ef_search,
        )
        dropped = []
        if previous is not None:
            index.drop(previous)
            dropped.append(previous.table_name)
        if live is not None:
            index.set_state(live.version, "previous")
            live.state = "previous"
        index.record(new)
        index.point_view(table, corpus.dim, view_comment(new))  # last: readers wait only for the commit
        logger.info("%s now reads %s", config.name, table)
    return SwapResult(
        config.name,
        unchanged=False,
        live=new,
        previous=live,
        dropped=dropped,
        check=check,
        load_seconds=round(index_started - load_started, 2),
        index_seconds=round(index_seconds, 2),
        seconds=round(time.perf_counter() - started, 2),
    )


def _load(index: PgvectorIndex, table: str, corpus: Embeddings, sample: CorpusSample | None) -> CorpusSample | None:
    """Create `table` and COPY every verified shard into it, with one progress bar."""
    from tqdm import tqdm

    index.create_table(table, corpus.dim)
    with tqdm(total=corpus.count, desc=f"Loading {table}", unit="row", dynamic_ncols=True) as bar:
        for shard in corpus.shards():
            index.copy(table, shard.ids, shard.vectors)
            if sample is not None:
                sample.offer(shard)
            bar.update(len(shard.ids))
    return sample


def _sampled(sample: CorpusSample | None) -> QuerySet:
    if sample is None:
        raise RuntimeError("corpus rows are sampled while loading when no --queries are given")
    return sample.queries()


@dataclass
class RollbackResult:
    name: str
    live: Version
    previous: Version

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollback(db: str, name: str) -> RollbackResult:
    """Swap live and previous: NAME reads the previous version again; a second rollback undoes the first."""
    check_name(name)
    with transaction(db) as conn:
        index = PgvectorIndex(conn, name)
        if not has_registry(conn):
            raise ConfigError(f"{name}: embedops has no index of that name in this database")
        index.lock()
        versions = index.versions()
        index.check_ours(versions)
        live = next((item for item in versions if item.state == "live"), None)
        previous = next((item for item in versions if item.state == "previous"), None)
        if live is None:
            raise ConfigError(f"{name}: embedops has no index of that name in this database")
        if previous is None:
            raise ConfigError(f"{name} has no previous version to roll back to (only {live.table_name})")
        index.set_state(live.version, "previous")
        index.set_state(previous.version, "live")
        live.state, previous.state = "previous", "live"
        index.point_view(previous.table_name, previous.dim, view_comment(previous))
    return RollbackResult(name, live=previous, previous=live)


def status(db: str, name: str | None = None) -> list[Version]:
    """Every version embedops keeps (of `name`, or of every index), live first."""
    if name is not None:
        check_name(name)
    with transaction(db) as conn:
        return list_versions(conn, name) if has_registry(conn) else []
