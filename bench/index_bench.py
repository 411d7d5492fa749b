"""Index swap benchmark: `embedops index` into a real PostgreSQL + pgvector, with its verification numbers.

    python bench/index_bench.py [--corpora climate-fever,wikiqa] [--data ../shared/data]
                                [--work /tmp/index-bench] [--db DSN]

Model: the bundled all-MiniLM-L6-v2 quantized to ONNX int8 by `embedops quantize`. Each BEIR corpus
and its real queries are embedded with it (`embedops embed`, kept in --work between runs), then swapped
in with `embedops index --queries` (every query, k = 10, cosine). Columns: recall@10 of the HNSW index
(forced) against exact float64 search at ef_search 40 (pgvector's default, what the swap checks) and
100; the mean wall time of one HNSW query from Python (SQL round trip included) and of exact search per
query (batched numpy over the Parquet vectors, shard reads included); the load and index build times;
and a reader that runs kNN queries on the view throughout a second swap (--force): its errors and
its longest query. Without --db a PostgreSQL 16 from the `pgserver` wheel is started in a temp dir
(tests/conftest.py's server) and stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from recipe_bench import machine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def embedded(artifact: Path, source: Path, output: Path) -> Path:
    """`source` embedded with `artifact` into `output` (a finished output is kept: embed does nothing)."""
    command = [sys.executable, "-m", "embedops", "embed", "--model", str(artifact), "--input", str(source)]
    subprocess.run([*command, "--output", str(output)], check=True, stderr=subprocess.DEVNULL)
    return output


class Reader(threading.Thread):
    """kNN queries against the view, one after another, until stopped: errors and the slowest one."""

    def __init__(self, dsn: str, name: str, queries: np.ndarray) -> None:
        super().__init__()
        self.dsn, self.name, self.queries = dsn, name, queries
        self.errors = 0
        self.done = 0
        self.longest = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        import psycopg
        from pgvector.psycopg import register_vector

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            register_vector(conn)
            while not self.stop.is_set():
                query = self.queries[self.done % len(self.queries)]
                started = time.perf_counter()
                try:
                    conn.execute(f"SELECT id FROM {self.name} ORDER BY embedding <=> %s LIMIT 10", (query,)).fetchall()
                except psycopg.Error:
                    self.errors += 1
                self.longest = max(self.longest, time.perf_counter() - started)
                self.done += 1


def bench_corpus(dsn: str, artifact: Path, data: Path, work: Path, name: str) -> dict[str, object]:
    from embedops.index import swap
    from embedops.index.embeddings import Embeddings
    from embedops.index.pgvector import PgvectorIndex, connect
    from embedops.index.verify import measure_recall, real_queries

    corpus = embedded(artifact, data / name / "corpus.jsonl", work / f"{name}-corpus")
    queries = embedded(artifact, data / name / "queries.jsonl", work / f"{name}-queries")
    view = name.replace("-", "_")
    config = swap.IndexConfig(str(corpus), view, dsn, queries=str(queries), sample=1_000_000)
    first = swap.swap(config)
    assert first.check is not None
    loaded = Embeddings.open(corpus)
    query_set = real_queries(Embeddings.open(queries), loaded, 1_000_000)
    conn = connect(dsn)
    with conn.transaction():
        index = PgvectorIndex(conn, view)
        index.prepare()
        wider = measure_recall(index, view, query_set, loaded, k=10, metric="cosine", ef_search=100)
    conn.close()
    reader = Reader(dsn, view, query_set.vectors)
    reader.start()
    try:
        time.sleep(0.5)
        second = swap.swap(swap.IndexConfig(str(corpus), view, dsn, queries=str(queries), force=True))
        time.sleep(0.5)
    finally:
        reader.stop.set()
        reader.join()
    return {
        "corpus": f"{name} ({loaded.count:,})",
        "queries": f"{len(query_set):,} real",
        "recall40": first.check.recall,
        "lowest40": first.check.lowest,
        "recall100": wider.recall,
        "hnsw_ms": first.check.index_ms,
        "hnsw100_ms": wider.index_ms,
        "exact_ms": first.check.exact_ms,
        "load_s": first.load_seconds,
        "index_s": first.index_seconds,
        "reader": f"{reader.errors} of {reader.done} / {1000 * reader.longest:.0f} ms",
        "swap_s": second.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", default="climate-fever,wikiqa")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/index-bench"))
    parser.add_argument("--db", help="an existing PostgreSQL with pgvector (default: start one from pgserver)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    artifact = args.work / "minilm-int8"
    if not (artifact / "embedops.json").is_file():
        quantize = ["quantize", "--model-path", "sentence-transformers/all-MiniLM-L6-v2", "--dtype", "int8"]
        subprocess.run([sys.executable, "-m", "embedops", *quantize, "--output", str(artifact)], check=True)
    server = None
    dsn = args.db
    if dsn is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import PostgresServer  # type: ignore[import-not-found]

        server = PostgresServer(Path(tempfile.mkdtemp(prefix="embedops-pg-")))
        dsn = server.create_database()
    try:
        rows = [bench_corpus(dsn, artifact, args.data, args.work, name) for name in args.corpora.split(",")]
        versions = server_versions(dsn)
    finally:
        if server is not None:
            server.stop()
    facts = machine()
    print(f"\n{datetime.date.today()} · {facts['cpu']} · {facts['cores']} cores · flags: {facts['flags']}")
    print(f"python {facts['python']}, {versions}")
    print("model: all-MiniLM-L6-v2, ONNX int8 (embedops quantize); k = 10, cosine, HNSW m 16, ef_construction 64\n")
    print(
        "| corpus | queries | recall@10 at ef_search 40 (lowest) | at ef_search 100 | HNSW query ms (40 / 100) "
        "| exact ms | load s | index s | reader errors / longest query during swap |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| {row['corpus']} | {row['queries']} | {row['recall40']:.3f} ({row['lowest40']:.2f}) "
            f"| {row['recall100']:.3f} | {row['hnsw_ms']:.2f} / {row['hnsw100_ms']:.2f} | {row['exact_ms']:.2f} "
            f"| {row['load_s']:.1f} | {row['index_s']:.1f} | {row['reader']} |"
        )


def server_versions(dsn: str) -> str:
    from importlib.metadata import version

    import psycopg

    with psycopg.connect(dsn) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]  # type: ignore[index]
    return (
        f"PostgreSQL {server}, pgvector {vector}, psycopg {version('psycopg')}, pgvector (Python) "
        f"{version('pgvector')}, pyarrow {version('pyarrow')}, onnxruntime {version('onnxruntime')}"
    )


if __name__ == "__main__":
    main()
