"""The database side: PostgreSQL + pgvector. Versioned tables NAME_vN, an HNSW index on each, a view
NAME that readers query, and a registry table recording which version is live and which is previous.

Everything here runs inside the caller's transaction, so a failure anywhere leaves nothing behind.
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from embedops.errors import ConfigError, EmbedopsError, MissingDependencyError

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("embedops.index")

REGISTRY = "embedops_index_versions"
OPERATORS = {"cosine": "<=>", "ip": "<#>", "l2": "<->"}
OPCLASSES = {"cosine": "vector_cosine_ops", "ip": "vector_ip_ops", "l2": "vector_l2_ops"}
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
MAX_BUILD_MEMORY = 1 << 30  # the most maintenance_work_mem one index build may take
NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,47}")
_LOCK_SPACE = 0x656D6265  # "embe": the advisory-lock key space of embedops index names
_REGISTRY_DDL = (
    f"CREATE TABLE {REGISTRY} (name text NOT NULL, version int NOT NULL, table_name text NOT NULL,"
    " state text NOT NULL CHECK (state IN ('live', 'previous')), rows bigint NOT NULL, dim int NOT NULL,"
    " metric text NOT NULL, model text NOT NULL, model_fingerprint text NOT NULL, content text NOT NULL,"
    " embeddings text NOT NULL, recall double precision NOT NULL, recall_min double precision NOT NULL,"
    " k int NOT NULL, queries int NOT NULL, query_source text NOT NULL, ef_search int NOT NULL,"
    " created timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (name, version))"
)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


class DatabaseError(EmbedopsError):
    """The database refused or could not be reached; the message is its first line."""


@dataclass
class Version:
    """One row of the registry: a loaded, verified table and what it holds."""

    name: str
    version: int
    table_name: str
    state: str  # live | previous
    rows: int
    dim: int
    metric: str
    model: str
    model_fingerprint: str
    content: str  # digest of the embed output's plan and shard hashes
    embeddings: str
    recall: float
    recall_min: float
    k: int
    queries: int
    query_source: str  # corpus | the --queries path
    ef_search: int
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = [item.name for item in fields(Version)]


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"--name {name!r}: use lower-case letters, digits and _ (at most 48, not starting with a digit)"
        )
    return name


def psycopg_module() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise MissingDependencyError("psycopg", "index") from exc
    return psycopg


def first_line(exc: BaseException) -> str:
    """A database error as one line: libpq's first says where it failed and why (no password)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def connect(dsn: str) -> psycopg.Connection[Any]:
    """A connection in autocommit mode, so `conn.transaction()` is a real BEGIN ... COMMIT (not a savepoint
    in an implicit transaction); an unreachable server is one line, not a traceback."""
    psycopg = psycopg_module()
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10, application_name="embedops index")
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot reach the database: {first_line(exc)}") from exc
    # A killed client's backend notices within a second even mid index build, and releases its locks.
    conn.execute("SET client_connection_check_interval = '1s'")
    return conn


def _ident(name: str) -> Any:
    from psycopg import sql

    return sql.Identifier(name)


def _sql(text: str, **names: str) -> Any:
    from psycopg import sql

    return sql.SQL(text).format(**{key: _ident(value) for key, value in names.items()})


def copy_rows(ids: list[str], vectors: np.ndarray) -> bytes:
    """Rows (id text, embedding vector) in COPY's binary format: no text formatting of floats."""
    width = vectors.shape[1]
    vector_head = struct.pack(">ihh", 4 + 4 * width, width, 0)
    data = np.ascontiguousarray(vectors, dtype=">f4").tobytes()
    step = 4 * width
    parts = []
    for row, ident in enumerate(ids):
        encoded = ident.encode()
        parts.append(struct.pack(">hi", 2, len(encoded)) + encoded + vector_head + data[row * step : (row + 1) * step])
    return b"".join(parts)


class PgvectorIndex:
    """The versions of one index NAME in one database, seen from inside one transaction."""

    def __init__(self, conn: psycopg.Connection[Any], name: str) -> None:
        self.conn = conn
        self.name = check_name(name)

    # -- setup and checks ------------------------------------------------------------------------
    def lock(self) -> None:
        """One writer per name: a second `embedops index` on NAME waits here until the first commits."""
        acquired = self.conn.execute(
            "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_SPACE, self.name)
        ).fetchone()
        if not (acquired and acquired[0]):
            logger.info("another embedops index is changing %s; waiting for it to finish", self.name)
            self.conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_SPACE, self.name))

    def prepare(self) -> None:
        """pgvector and the registry, created where missing. Creating them takes a lock shared by every
        name (held to the commit, so two first runs do not both create them); later runs skip it."""
        if not (self._has_extension() and has_registry(self.conn)):
            self.conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_SPACE + 1,))
            if not self._has_extension():
                self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            if not has_registry(self.conn):
                self.conn.execute(_REGISTRY_DDL)
        from pgvector.psycopg import register_vector

        register_vector(self.conn)
        self.lock()

    def _has_extension(self) -> bool:
        return self.conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is not None

    def versions(self) -> list[Version]:
        """This name's versions, live first."""
        if not has_registry(self.conn):
            return []
        return list_versions(self.conn, self.name)

    def check_ours(self, versions: list[Version]) -> None:
        """Refuse a NAME that embedops did not create, and touch nothing of it."""
        kind = self.relation_kind(self.name)
        if kind is not None and (not versions or kind != "v"):
            raise ConfigError(
                f"{self.name} already exists in the database and embedops did not create it; "
                "choose another --name (it was left untouched)"
            )
        if kind is None and versions:
            raise ConfigError(
                f"the view {self.name} is gone but {REGISTRY} still lists its versions; "
                f"restore the view or delete its rows from {REGISTRY}"
            )

    def relation_kind(self, name: str) -> str | None:
        row = self.conn.execute(
            "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)", (_quoted(name),)
        ).fetchone()
        return str(row[0]) if row else None

    # -- loading ---------------------------------------------------------------------------------
    def create_table(self, table: str, dim: int) -> None:
        if self.relation_kind(table) is not None:
            raise ConfigError(f"{table} already exists and is not a version embedops recorded; drop or rename it")
        self.conn.execute(
            _sql(f"CREATE TABLE {{table}} (id text NOT NULL, embedding vector({dim}) NOT NULL)", table=table)
        )

    def copy(self, table: str, ids: list[str], vectors: np.ndarray) -> None:
        with self.conn.cursor() as cursor:
            statement = _sql("COPY {table} (id, embedding) FROM STDIN WITH (FORMAT BINARY)", table=table)
            with cursor.copy(statement) as copy:
                copy.write(_COPY_HEADER + copy_rows(ids, vectors) + _COPY_TRAILER)

    def count(self, table: str) -> int:
        row = self.conn.execute(_sql("SELECT count(*) FROM {table}", table=table)).fetchone()
        return int(row[0]) if row else 0

    def build_index(self, table: str, metric: str, rows: int, dim: int) -> None:
        """HNSW on the new table. pgvector builds fastest with the whole graph in maintenance_work_mem, so
        it is raised for this transaction only when the estimate exceeds it, up to MAX_BUILD_MEMORY."""
        needed = rows * (4 * dim + 2 * HNSW_M * 16 + 256)
        row = self.conn.execute("SELECT pg_size_bytes(current_setting('maintenance_work_mem'))").fetchone()
        current = int(row[0]) if row else 0
        if needed > current:
            budget = min(int(needed * 1.2), MAX_BUILD_MEMORY)
            logger.info("raising maintenance_work_mem to %d MiB for the index build", budget >> 20)
            self.conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (f"{budget >> 10}kB",))
        self.conn.execute(
            _sql(
                f"CREATE INDEX {{index}} ON {{table}} USING hnsw (embedding {OPCLASSES[metric]})"
                f" WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})",
                index=f"{table}_hnsw",
                table=table,
            )
        )

    # -- queries ---------------------------------------------------------------------------------
    def use_index(self, ef_search: int) -> None:
        """Make this transaction's nearest-neighbour queries go through HNSW, as readers' do."""
        self.conn.execute("SELECT set_config('enable_seqscan', 'off', true)")
        self.conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef_search),))

    def nearest(self, relation: str, query: np.ndarray, metric: str, limit: int) -> tuple[list[str], np.ndarray]:
        """Ids and stored vectors of the `limit` rows nearest `query`, as a reader's ORDER BY ... LIMIT finds them."""
        rows = self.conn.execute(
            _sql(
                f"SELECT id, embedding FROM {{relation}} ORDER BY embedding {OPERATORS[metric]} %s LIMIT %s",
                relation=relation,
            ),
            (np.asarray(query, dtype=np.float32), limit),
        ).fetchall()
        vectors = np.array([_as_array(row[1]) for row in rows], dtype=np.float32).reshape(len(rows), len(query))
        return [row[0] for row in rows], vectors

    # -- making a version live -------------------------------------------------------------------
    def point_view(self, table: str, dim: int, comment: str) -> None:
        """NAME reads `table`. CREATE OR REPLACE keeps readers' grants; a new width needs DROP and CREATE,
        which is atomic for readers all the same (they wait for the commit, then see the new view)."""
        current = self.conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s)"
            " AND attname = 'embedding'",
            (_quoted(self.name),),
        ).fetchone()
        if current is not None and current[0] != f"vector({dim})":
            self.conn.execute(_sql("DROP VIEW {view}", view=self.name))
        self.conn.execute(
            _sql("CREATE OR REPLACE VIEW {view} AS SELECT id, embedding FROM {table}", view=self.name, table=table)
        )
        self.conn.execute(_sql("COMMENT ON VIEW {view} IS ", view=self.name) + _literal(comment))

    def record(self, version: Version) -> None:
        values = [getattr(version, column) for column in _COLUMNS if column != "created"]
        names = ", ".join(column for column in _COLUMNS if column != "created")
        marks = ", ".join(["%s"] * len(values))
        self.conn.execute(_sql(f"INSERT INTO {{registry}} ({names}) VALUES ({marks})", registry=REGISTRY), values)

    def set_state(self, version: int, state: str) -> None:
        self.conn.execute(
            _sql("UPDATE {registry} SET state = %s WHERE name = %s AND version = %s", registry=REGISTRY),
            (state, self.name, version),
        )

    def drop(self, version: Version) -> None:
        self.conn.execute(_sql("DROP TABLE IF EXISTS {table}", table=version.table_name))
        self.conn.execute(
            _sql("DELETE FROM {registry} WHERE name = %s AND version = %s", registry=REGISTRY),
            (self.name, version.version),
        )


def list_versions(conn: psycopg.Connection[Any], name: str | None = None) -> list[Version]:
    """Registry rows (one name's, or every name's), live before previous."""
    where = "WHERE name = %s" if name else ""
    rows = conn.execute(
        _sql(
            f"SELECT {', '.join(_COLUMNS[:-1])}, to_char(created, 'YYYY-MM-DD HH24:MI:SS TZ') FROM {{registry}}"
            f" {where} ORDER BY name, state = 'previous', version DESC",
            registry=REGISTRY,
        ),
        (name,) if name else (),
    ).fetchall()
    return [Version(*row) for row in rows]


def has_registry(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (REGISTRY,)).fetchone()
    return bool(row and row[0])


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> Any:
    from psycopg import sql

    return sql.Literal(text)


def _as_array(value: Any) -> np.ndarray:
    return value.to_numpy() if hasattr(value, "to_numpy") else np.asarray(value)
