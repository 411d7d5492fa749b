"""`embedops eval --model A [--model B ...] --data PATH`: compare models on triples, BEIR or STS data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embedops.configs import help_with_defaults

ORDER = 30


def _ks(text: str) -> list[int]:
    try:
        return [int(k) for k in text.split(",") if k.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 1,5,10 (got {text!r})") from exc


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score and compare models on retrieval or similarity data, with a regression gate",
        description="Score one dataset with each --model (the first is the baseline) and print a comparison.",
        formatter_class=help_with_defaults("embedops.evaluate.runner:EvalConfig"),
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        dest="models",
        metavar="MODEL",
        help="artifact directory, SentenceTransformer directory, hub id or http://host:port/embed; "
        "repeat (first: baseline)",
    )
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="pairs/triples file (.tsv/.csv/.jsonl), BEIR directory, or STS file (STS-B or SICK layout)",
    )
    parser.add_argument("--split", help="BEIR qrels split or SICK set")
    parser.add_argument(
        "--task",
        choices=("auto", "triples", "beir", "sts"),
        help="how to read --data (auto: detect from the layout)",
    )
    parser.add_argument(
        "--k", type=_ks, dest="ks", metavar="K[,K...]", help="Hit@k cut-offs (default 1,5,10; BEIR 1,10)"
    )
    parser.add_argument("--batch-size", type=int, help="texts per encoder batch")
    parser.add_argument(
        "--max-queries",
        type=int,
        metavar="N",
        help="score a fixed-seed sample of N queries (STS: pairs) for a quick check; the corpus stays whole",
    )
    parser.add_argument("--seed", type=int, help="seed for --max-queries sampling")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: automatic)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    parser.add_argument("--report", type=Path, metavar="FILE.md", help="write a markdown report and a PNG chart")
    parser.add_argument(
        "--record", action="store_true", help="store the scores in each artifact's embedops.json eval block"
    )
    parser.add_argument(
        "--fail-below",
        action="append",
        metavar="METRIC=VALUE",
        help="exit 1 if a model under test scores below VALUE (0..1), e.g. ndcg@10=0.55; repeatable",
    )
    parser.add_argument(
        "--max-drop",
        action="append",
        metavar="METRIC=POINTS",
        help="exit 1 if a model scores more than POINTS (x100) below the first model, e.g. ndcg@10=1.0",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedops.evaluate import EvalConfig, check_gates, evaluate, record
    from embedops.evaluate.report import check_report_path, format_table, write_json, write_report

    config = EvalConfig.from_flags(vars(args))
    if args.report:
        check_report_path(args.report)
    result = evaluate(config)
    print(format_table(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.report:
        chart = write_report(result, args.report)
        print(f"wrote {args.report} and {chart}", file=sys.stderr)
    if args.record:
        written = record(result)
        for directory in written:
            print(f"recorded {result.dataset} in {directory}/embedops.json", file=sys.stderr)
        if not written:
            print("--record: no model is an embedops artifact; nothing recorded", file=sys.stderr)
    check_gates(result, config)
    if config.fail_below or config.max_drop:
        print("gate passed")
    return 0
