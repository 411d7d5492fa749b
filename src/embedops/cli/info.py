"""`embedops info MODEL`: what an artifact (or any model reference) is."""

from __future__ import annotations

import argparse
import json

ORDER = 90


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="describe a model artifact, directory or hub id")
    parser.add_argument("model", help="artifact directory, SentenceTransformer directory or hub id")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedops.artifact import summary
    from embedops.models import resolve

    ref = resolve(args.model)
    if args.json:
        print(json.dumps({"path": str(ref.path), "source": ref.source, **ref.manifest.to_dict()}, indent=2))
    else:
        print(summary(ref.manifest, ref.path) + f"\n  source        {ref.source}")
    return 0
