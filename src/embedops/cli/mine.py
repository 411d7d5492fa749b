"""`embedops mine`: hard negatives for (anchor, positive) pairs, retrieved with the base model."""

from __future__ import annotations

import argparse
import json

from embedops.configs import help_with_defaults

ORDER = 6


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mine",
        help="mine hard negatives for a pairs file (output feeds `embedops finetune`)",
        description=(
            "Rank the corpus for each anchor with the model, skip its positives, take candidates from ranks "
            "[range-min, range-max) that score at most (1 - relative-margin) x the positive (false-negative "
            "guard), and write one {anchor, positive, negative} JSONL line per negative."
        ),
        formatter_class=help_with_defaults("embedops.data.mine:MineConfig"),
    )
    parser.add_argument("--data", required=True, help="pairs file: .tsv, .csv or .jsonl")
    parser.add_argument("--output", required=True, help="triplets file to write (.jsonl)")
    parser.add_argument(
        "--corpus", help="passages to mine from: BEIR corpus.jsonl or one passage per line (default: the positives)"
    )
    parser.add_argument("--model", help="model to retrieve with (default: the bundled base model)")
    parser.add_argument("--num-negatives", type=int, metavar="1..10", help="negatives per pair")
    parser.add_argument("--range-min", type=int, help="skip this many top-ranked candidates")
    parser.add_argument("--range-max", type=int, help="consider candidates up to this rank")
    parser.add_argument(
        "--relative-margin",
        type=float,
        help="skip candidates scoring above (1 - margin) x the positive's score",
    )
    parser.add_argument(
        "--sampling",
        choices=("top", "random"),
        help="top: the best-ranked allowed candidates; random: a sample of them",
    )
    parser.add_argument(
        "--fill",
        choices=("random", "drop"),
        help="a pair whose rank window yields too few negatives: random fills it with random passages, "
        "drop leaves it out",
    )
    parser.add_argument("--batch-size", type=int, help="encoding batch size")
    parser.add_argument("--seed", type=int, help="for --sampling random")
    parser.add_argument("--device", help="cpu, cuda … (default: sentence-transformers' choice)")
    parser.add_argument("--skip-invalid", action="store_true", help="skip bad lines instead of failing")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedops.data.mine import MineConfig, mine

    result = mine(MineConfig.from_flags(vars(args)))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(
        f"mined {result.triplets} triplets for {result.pairs} pairs ({result.anchors} anchors) "
        f"from {result.corpus} passages"
    )
    for count, pairs in result.negatives_per_pair.items():
        print(f"  {pairs:>7} pairs got {count} mined negative(s)")
    if result.filled:
        print(f"  {result.filled} pairs short of mined negatives got random passages instead (--fill drop: leave out)")
    elif result.negatives_per_pair.get(0):
        print("  pairs with no negative are left out; widen --range-max or lower --range-min to keep them")
    print(f"  {result.skipped_by_margin} candidates skipped by the false-negative guard")
    if result.mean_negative_score is not None:
        print(
            f"  mean cosine to the anchor: positive {result.mean_positive_score:.4f}, "
            f"negative {result.mean_negative_score:.4f}"
        )
    print(f"wrote {result.output}")
    return 0
