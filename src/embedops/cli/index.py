"""`embedops index`: load an `embed` output into PostgreSQL + pgvector, verify it and swap it live."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from embedops.configs import help_with_defaults

ORDER = 56
DB_ENV = "EMBEDOPS_DB"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index",
        help="swap a live pgvector index to an embed output (verified, atomic, with rollback)",
        description=(
            "Load an `embedops embed` output into a new table NAME_vN with an HNSW index, check its row count and "
            "recall@k against exact search, then point the view NAME at it in the same transaction. The version it "
            "replaces is kept for --rollback. Needs PostgreSQL with pgvector: pip install 'embedops[index]'."
        ),
        formatter_class=help_with_defaults("embedops.index.swap:IndexConfig"),
    )
    add = parser.add_argument
    add("--embeddings", help="the --output directory of `embedops embed` (float32 or float16 vectors)")
    add("--name", help="the view readers query; its versions are tables NAME_v1, NAME_v2, ...")
    add("--db", help=f"PostgreSQL connection string (default: ${DB_ENV}, else libpq's PG* variables)")
    add("--queries", help="an `embed` output of real queries from the same model (default: sampled corpus rows)")
    add("--min-recall", type=float, help="refuse the swap below this recall@k")
    add("--k", type=int, help="neighbours per query for the recall check")
    add("--sample", type=int, help="queries the check runs")
    add("--metric", choices=("cosine", "ip", "l2"), help="distance of the index")
    add("--ef-search", type=int, help="hnsw.ef_search for the check; the default is pgvector's")
    add("--rollback", action="store_true", help="make the previous version live again (twice: undo)")
    add("--status", action="store_true", help="list the versions of NAME (of every index without --name)")
    add("--force", action="store_true", help="load even when the live version holds this output already")
    add("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedops.errors import ConfigError
    from embedops.index import swap

    db = args.db if args.db is not None else os.environ.get(DB_ENV, "")
    if args.status:
        return _status(swap.status(db, args.name), as_json=args.json)
    if not args.name:
        raise ConfigError("--name is required (the view readers query)")
    if args.rollback:
        rolled = swap.rollback(db, args.name)
        if args.json:
            print(json.dumps(rolled.to_dict(), indent=2))
        else:
            print(f"rolled back {rolled.name}: it reads {rolled.live.table_name} again")
            print(f"  previous: {rolled.previous.table_name} (--rollback again to return to it)")
        return 0
    if not args.embeddings:
        raise ConfigError("--embeddings is required (or pass --status or --rollback)")
    config = swap.IndexConfig.from_flags({**vars(args), "db": db})
    result = swap.swap(config)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(_summary(result))
    return 0


def _summary(result: Any) -> str:
    live = result.live
    if result.unchanged:
        return (
            f"{result.name} already reads {live.table_name}, loaded from this output; nothing to do "
            "(--force loads it again)"
        )
    check = result.check
    lines = [
        f"swapped {result.name} to {live.table_name}: {live.rows} rows x {live.dim}, {live.metric} distance",
        f"  model     {live.model} ({live.model_fingerprint[:12]})",
        f"  load      {result.load_seconds:.1f} s, HNSW index {result.index_seconds:.1f} s",
        f"  recall@{check.k}  {check.recall:.3f} (lowest {check.lowest:.2f}) over {check.queries} "
        f"{'corpus rows' if live.query_source == 'corpus' else 'queries'}",
        f"  query     HNSW {check.index_ms:.2f} ms, exact search {check.exact_ms:.2f} ms (float64 over the shards)",
        f"  previous  {result.previous.table_name + ' (--rollback)' if result.previous else 'none'}",
    ]
    if result.dropped:
        lines.append(f"  dropped   {', '.join(result.dropped)}")
    lines.append(
        f"  readers   SELECT id FROM {result.name} ORDER BY embedding {_operator(live)} $1 LIMIT {check.k}"
        f"  (checked at hnsw.ef_search {check.ef_search})"
    )
    return "\n".join(lines)


def _operator(version: Any) -> str:
    from embedops.index.pgvector import OPERATORS

    return OPERATORS[version.metric]


def _status(versions: list[Any], *, as_json: bool) -> int:
    if as_json:
        print(json.dumps([version.to_dict() for version in versions], indent=2))
        return 0
    if not versions:
        print("no index versions recorded in this database")
        return 0
    print(f"{'name':<20} {'state':<9} {'table':<26} {'rows':>10} {'dim':>5} {'metric':<7} {'recall':>7}  model")
    for item in versions:
        print(
            f"{item.name:<20} {item.state:<9} {item.table_name:<26} {item.rows:>10} {item.dim:>5} "
            f"{item.metric:<7} {item.recall:>7.3f}  {item.model}  ({item.created})"
        )
    return 0
