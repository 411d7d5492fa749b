"""`embedops prep`: clean a pairs file (normalise, drop empty/self/duplicate pairs) and split it without leakage."""

from __future__ import annotations

import argparse
import json

from embedops.configs import help_with_defaults

ORDER = 5


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prep",
        help="clean a pairs file: dedup, near-dup filter, length report, leak-free train/eval split",
        description=(
            "Normalise (NFC, whitespace), drop empty and self pairs, exact and near duplicates; report lengths; "
            "split train/eval keeping near-duplicate groups on one side. Writes OUT, OUT's eval split "
            "(NAME.eval.EXT), NAME.prep.json and NAME.lengths.png beside it, all or nothing."
        ),
        formatter_class=help_with_defaults("embedops.data.prep:PrepConfig"),
    )
    parser.add_argument("--data", required=True, help="pairs/triplets file: .tsv, .csv or .jsonl")
    parser.add_argument("--output", required=True, help="cleaned training file (.tsv, .csv or .jsonl)")
    parser.add_argument("--eval-fraction", type=float, help="share held out for eval (0: none)")
    parser.add_argument("--min-chars", type=int, help="drop pairs with a side shorter than this")
    parser.add_argument("--max-chars", type=int, help="drop pairs with a side longer than this")
    parser.add_argument(
        "--near-dup-threshold",
        type=float,
        help="similarity at which both sides make a near duplicate (Jaccard for minhash, cosine for embedding)",
    )
    parser.add_argument(
        "--near-dup-method",
        choices=("minhash", "embedding"),
        help="minhash: character shingles (fast, streaming); embedding: cosine with --model (paraphrases too)",
    )
    parser.add_argument("--removed", help="write each dropped line with its reason to this JSONL file")
    parser.add_argument(
        "--model", help="tokenizer for token lengths and encoder for the embedding method (default: the bundled model)"
    )
    parser.add_argument("--seed", type=int, help="which near-duplicate groups go to eval")
    parser.add_argument("--force", action="store_true", help="replace existing output files")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedops.data.prep import PrepConfig, prep

    result = prep(PrepConfig.from_flags(vars(args)))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    removed = sum(result.removed.values())
    print(f"read {result.rows} pairs: kept {result.train} train + {result.eval} eval, removed {removed}")
    for reason, count in result.removed.items():
        if count:
            print(f"  {reason:<16} {count}")
    print(f"  split: {result.groups} groups of related pairs (a shared or near-identical side), each kept whole")
    lengths = result.lengths
    unit = lengths["unit"]
    for side in ("anchor", "positive"):
        stats = lengths.get(side, {}).get(unit)
        if stats:
            print(f"  {side:<9} {unit}: median {stats['p50']:.0f}, p95 {stats['p95']:.0f}, max {stats['max']}")
    if "ratio" in lengths:
        print(f"  positive/anchor length ratio: median {lengths['ratio']['median']}")
    for warning in lengths["warnings"]:
        print(f"warning: {warning}")
    for path in result.files.values():
        print(f"wrote {path}")
    return 0
