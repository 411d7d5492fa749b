"""`embedops index` against a real PostgreSQL + pgvector (started by the `postgres_server` fixture).

Corpora are small and made here: synthetic vectors written through embed's own shard writer and
manifest (`_store`), or a real `embedops embed` run of the tiny model, so the file runs in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedops.cli import main
from embedops.embed.job import EmbedConfig, _store, run_embed
from embedops.embed.manifest import EmbedManifest, read_embed_manifest
from embedops.index.exact import METRICS, distances
from embedops.index.pgvector import REGISTRY

psycopg = pytest.importorskip("psycopg")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def write_output(
    path: Path,
    vectors: np.ndarray,
    *,
    model: str = "synthetic-a",
    shard_size: int = 1000,
    dtype: str = "float32",
    complete: bool = True,
    prefix: str = "d",
) -> Path:
    """An embed output of `vectors` with ids PREFIX0, PREFIX1, ..., written by embed's own code."""
    count, dim = vectors.shape
    manifest = EmbedManifest(
        model={"name": model, "fingerprint": f"{model}-fingerprint", "backend": "none", "dtype": "float32"},
        input={"path": str(path), "format": "synthetic", "bytes": 0, "sha256": str(hash(vectors.tobytes()))},
        options={"shard_size": shard_size, "dtype": dtype},
        count=count,
        dim=dim,
        vector_dtype=dtype,
        normalized=False,
    )
    path.mkdir(parents=True)
    starts = range(0, count, shard_size)
    blocks = [
        (
            index,
            [f"{prefix}{row}" for row in range(start, min(count, start + shard_size))],
            vectors[start : start + shard_size],
        )
        for index, start in enumerate(starts)
    ]
    _store(iter(blocks), path, manifest, time.perf_counter())
    if not complete:
        manifest.complete = False
        manifest.shards = manifest.shards[:-1]
        manifest.write(path)
    return path


def corpus(count: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Clustered vectors, as real embeddings are: neighbours exist and are not all ties."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, count // 50), dim))
    return (centres[rng.integers(0, len(centres), count)] + 0.3 * rng.normal(size=(count, dim))).astype(np.float32)


def index(*args: str) -> int:
    return main(["index", *args])


def count_view(dsn: str, name: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0])


def snapshot(dsn: str) -> dict[str, Any]:
    """Every relation, the views' definitions and comments, and the registry: what a refused run must not change."""
    with psycopg.connect(dsn) as conn:
        relations = conn.execute(
            "SELECT relname, relkind, coalesce(pg_get_viewdef(oid), ''), coalesce(obj_description(oid), '')"
            " FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY relname"
        ).fetchall()
        registry = []
        if conn.execute("SELECT to_regclass(%s)", (REGISTRY,)).fetchone()[0]:
            registry = conn.execute(f"SELECT * FROM {REGISTRY} ORDER BY name, version").fetchall()
    return {"relations": relations, "registry": registry}


def test_swap_of_a_real_embed_output_is_read_through_hnsw(
    tmp_path: Path, tiny_model_dir: Path, postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = [
        f"passage {i} about {['photos', 'albums', 'sharing', 'backup', 'restore', 'settings'][i % 6]} number {i * 7}"
        for i in range(300)
    ]
    (tmp_path / "corpus.txt").write_text("\n".join(texts) + "\n")
    output = tmp_path / "embeddings"
    run_embed(
        EmbedConfig(input=str(tmp_path / "corpus.txt"), output=str(output), model=str(tiny_model_dir), shard_size=100)
    )

    assert index("--embeddings", str(output), "--name", "passages", "--db", postgres_dsn) == 0
    summary = capsys.readouterr().out
    assert "swapped passages to passages_v1: 300 rows x 32" in summary and "recall@10" in summary

    with psycopg.connect(postgres_dsn) as conn:
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN SELECT id FROM passages ORDER BY embedding <=> %s::vector LIMIT 10",
                (str([0.1] * 32),),
            )
        )
        assert "Index Scan using passages_v1_hnsw on passages_v1" in plan, plan
        comment = conn.execute("SELECT obj_description('passages'::regclass)").fetchone()[0]
        assert "tiny-model" in comment and "ORDER BY embedding <=> query" in comment

    assert index("--status", "--name", "passages", "--db", postgres_dsn, "--json") == 0
    [version] = json.loads(capsys.readouterr().out)
    assert version["state"] == "live" and version["rows"] == 300 and version["recall"] >= 0.9
    assert version["model"] == read_embed_manifest(output).model["name"]  # type: ignore[union-attr]


def test_pgvector_distances_equal_exact_search(tmp_path: Path, postgres_dsn: str) -> None:
    vectors = corpus(400, dim=16)
    output = write_output(tmp_path / "out", vectors, shard_size=150)
    query = vectors[7] + 0.05
    for metric in METRICS:
        name = f"docs_{metric}"
        assert index("--embeddings", str(output), "--name", name, "--db", postgres_dsn, "--metric", metric) == 0
        operator = {"cosine": "<=>", "ip": "<#>", "l2": "<->"}[metric]
        with psycopg.connect(postgres_dsn) as conn:
            conn.execute("SET enable_seqscan = off")
            rows = conn.execute(
                f"SELECT id, embedding {operator} %s::vector FROM {name} ORDER BY 2 LIMIT 400",
                (str(query.tolist()),),
            ).fetchall()
        exact = distances(query[None, :], vectors, metric)[0]
        for ident, distance in rows:
            assert distance == pytest.approx(exact[int(ident[1:])], rel=1e-5, abs=1e-5), (metric, ident)


def test_a_reader_during_a_swap_sees_the_old_count_then_the_new_one(tmp_path: Path, postgres_dsn: str) -> None:
    old = write_output(tmp_path / "old", corpus(2000, seed=1))
    new = write_output(tmp_path / "new", corpus(3000, seed=2))
    assert index("--embeddings", str(old), "--name", "live_docs", "--db", postgres_dsn) == 0
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            while not done.is_set():
                try:
                    seen.append(int(conn.execute("SELECT count(*) FROM live_docs").fetchone()[0]))
                    conn.execute(
                        "SELECT id FROM live_docs ORDER BY embedding <=> %s::vector LIMIT 10", (str([0.5] * 32),)
                    ).fetchall()
                except Exception as exc:
                    errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        time.sleep(0.2)
        assert index("--embeddings", str(new), "--name", "live_docs", "--db", postgres_dsn) == 0
        time.sleep(0.2)
    finally:
        done.set()
        thread.join()
    assert errors == []
    switch = seen.index(3000)
    assert switch > 0 and set(seen[:switch]) == {2000} and set(seen[switch:]) == {3000}


def test_a_failed_check_leaves_everything_as_it_was(
    tmp_path: Path, postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        index("--embeddings", str(write_output(tmp_path / "a", corpus(500))), "--name", "docs", "--db", postgres_dsn)
        == 0
    )
    before = snapshot(postgres_dsn)
    capsys.readouterr()
    # ef_search 1 lets HNSW return one row where ten are asked for: recall 0.1, far below the bar.
    b = write_output(tmp_path / "b", corpus(600, seed=3))
    code = index("--embeddings", str(b), "--name", "docs", "--db", postgres_dsn, "--ef-search", "1")
    err = capsys.readouterr().err
    assert code == 1 and "below --min-recall 0.9; nothing was changed" in err
    assert snapshot(postgres_dsn) == before


def test_kill_9_while_loading_leaves_the_database_unchanged_and_a_rerun_finishes(
    tmp_path: Path, postgres_dsn: str
) -> None:
    small = write_output(tmp_path / "small", corpus(300))
    assert index("--embeddings", str(small), "--name", "docs", "--db", postgres_dsn) == 0
    before = snapshot(postgres_dsn)
    big = write_output(tmp_path / "big", corpus(40_000, dim=64, seed=4), shard_size=2000)
    command = [
        sys.executable,
        "-m",
        "embedops",
        "index",
        "--embeddings",
        str(big),
        "--name",
        "docs",
        "--db",
        postgres_dsn,
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "80"})
    assert process.stderr is not None
    output = ""
    while "Loading docs_v2" not in output and process.poll() is None:
        output += process.stderr.read(1)
    with psycopg.connect(postgres_dsn) as conn:  # its transaction is open: the loading backend holds its lock
        held = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted").fetchone()[0]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert held >= 1 and process.returncode == -signal.SIGKILL
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:  # the server notices the client is gone
        for _ in range(100):
            if not conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'embedops index'"
            ).fetchone()[0]:
                break
            time.sleep(0.1)
    assert snapshot(postgres_dsn) == before
    assert index("--embeddings", str(big), "--name", "docs", "--db", postgres_dsn, "--sample", "50") == 0
    assert count_view(postgres_dsn, "docs") == 40_000


def test_rollback_twice_and_a_third_version_drops_the_oldest(
    tmp_path: Path, postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_output(tmp_path / "v1", corpus(300, dim=32))
    second = write_output(tmp_path / "v2", corpus(400, dim=16, seed=5))  # another width: the view is recreated
    third = write_output(tmp_path / "v3", corpus(500, dim=16, seed=6))
    db = ("--db", postgres_dsn)
    assert index("--embeddings", str(first), "--name", "docs", *db) == 0
    assert index("--rollback", "--name", "docs", *db) == 2  # nothing to roll back to yet
    assert "no previous version" in capsys.readouterr().err
    assert index("--embeddings", str(second), "--name", "docs", *db) == 0
    assert count_view(postgres_dsn, "docs") == 400
    assert index("--rollback", "--name", "docs", *db) == 0
    assert count_view(postgres_dsn, "docs") == 300
    assert index("--rollback", "--name", "docs", *db) == 0
    assert count_view(postgres_dsn, "docs") == 400
    assert index("--embeddings", str(third), "--name", "docs", *db) == 0
    capsys.readouterr()
    assert index("--status", "--name", "docs", *db, "--json") == 0
    versions = json.loads(capsys.readouterr().out)
    assert [(item["table_name"], item["state"]) for item in versions] == [
        ("docs_v3", "live"),
        ("docs_v2", "previous"),
    ]
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT to_regclass('docs_v1')").fetchone()[0] is None
    assert index("--rollback", "--name", "docs", *db) == 0
    assert count_view(postgres_dsn, "docs") == 400


def test_the_same_output_again_does_nothing_unless_forced(
    tmp_path: Path, postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output = write_output(tmp_path / "out", corpus(300))
    db = ("--db", postgres_dsn)
    assert index("--embeddings", str(output), "--name", "docs", *db) == 0
    capsys.readouterr()
    assert index("--embeddings", str(output), "--name", "docs", *db) == 0
    assert "already reads docs_v1" in capsys.readouterr().out
    assert index("--embeddings", str(output), "--name", "docs", *db, "--force") == 0
    assert "swapped docs to docs_v2" in capsys.readouterr().out


REFUSALS = {
    "int8": "holds int8 vectors",
    "unfinished": "is unfinished",
    "changed shard": "changed after `embedops embed` wrote it",
    "queries of another model": "embed both with one model",
    "a name embedops did not create": "embedops did not create it",
    "unreachable database": "cannot reach the database",
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_are_one_line_exit_2_and_change_nothing(
    case: str, tmp_path: Path, postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    vectors = corpus(300)
    output = tmp_path / "out"
    args = ["--name", "docs", "--db", postgres_dsn]
    if case == "int8":
        write_output(output, vectors.clip(-127, 127).astype(np.int8), dtype="int8")
    elif case == "unfinished":
        write_output(output, vectors, shard_size=100, complete=False)
    else:
        write_output(output, vectors, shard_size=100)
    if case == "changed shard":
        shard = output / "part-00001.parquet"
        shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    elif case == "queries of another model":
        args += ["--queries", str(write_output(tmp_path / "q", corpus(20, seed=9), model="synthetic-b", prefix="q"))]
    elif case == "a name embedops did not create":
        with psycopg.connect(postgres_dsn) as conn:
            conn.execute("CREATE TABLE docs (id int); INSERT INTO docs VALUES (1)")
    elif case == "unreachable database":
        args[-1] = f"postgresql://postgres@/postgres?host={tmp_path}/nowhere"
    before = snapshot(postgres_dsn)
    capsys.readouterr()
    assert index("--embeddings", str(output), *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and REFUSALS[case] in err, err
    assert snapshot(postgres_dsn) == before
