"""`embedops merge`: LoRA adapter artifact -> merged full-precision artifact."""

from __future__ import annotations

import argparse

ORDER = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("merge", help="merge a LoRA adapter artifact into full weights")
    parser.add_argument("adapter", help="LoRA adapter artifact directory")
    parser.add_argument("--output", required=True, help="merged artifact directory to create")
    parser.add_argument("--force", action="store_true", help="replace an existing output artifact")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedops.train.merge import merge_adapter

    path, _ = merge_adapter(args.adapter, args.output, force=args.force)
    print(f"saved merged model to {path}")
    return 0
