"""`embedops embed`: re-embed a corpus with a model into a Parquet dataset (id, vector) plus embed.json."""

from __future__ import annotations

import argparse
import json

from embedops.configs import help_with_defaults

ORDER = 55


def register(subparsers: argparse._SubParsersAction) -> None:
    from embedops.embed.sources import FORMATS
    from embedops.vectors import STORAGE_DTYPES

    parser = subparsers.add_parser(
        "embed",
        help="re-embed a corpus into Parquet shards (resumable)",
        description=(
            "Embed every passage of a corpus with a model and write Parquet shards of (id, vector) plus embed.json "
            "(model and input hashes, options, count). The same command after an interruption continues where it "
            "stopped; a changed model, input or option is refused unless --force."
        ),
        formatter_class=help_with_defaults("embedops.embed.job:EmbedConfig"),
    )
    add = parser.add_argument
    add("--model", help="artifact directory, SentenceTransformer directory or hub id")
    add(
        "--input",
        required=True,
        help="BEIR directory or corpus.jsonl, .jsonl, .tsv/.csv (id, text), .txt (one passage a line), .parquet",
    )
    add("--output", required=True, help="directory for the shards and embed.json")
    add("--format", choices=FORMATS, help="input format (default: from the suffix)")
    add("--id-field", help="id key, column or header cell (default: _id, else id)")
    add("--text-field", help="text key, column or header cell (default: text)")
    add("--title-field", help="joined before the text when present (default: title; '' for none)")
    add("--dimensions", type=int, help="keep the first N dimensions (Matryoshka)")
    add("--normalize", action="store_true", help="store unit-length vectors")
    add("--dtype", choices=STORAGE_DTYPES, help="stored vector type")
    add("--batch-size", type=int, help="inputs per model call")
    add("--max-seq-length", type=int, help="cut passages to this many tokens (default: the model's window)")
    add("--prompt-name", help="one of the model's prompts, put before each passage")
    add("--shard-size", type=int, help="passages per Parquet shard")
    add("--device", help="cpu, cuda, cuda:1, ... (default: best available)")
    add("--engine", choices=("local", "ray"), help="where to embed: local, or ray (Ray Data)")
    add("--ray-address", help="Ray cluster to join, e.g. 10.0.0.5:6379 (default: start a local one)")
    add(
        "--concurrency",
        type=int,
        help="Ray actors, each with one model copy (default: the cluster's CPUs / --cpus-per-actor)",
    )
    add("--num-gpus", type=float, help="GPUs per Ray actor")
    add(
        "--cpus-per-actor",
        type=int,
        help="Ray CPUs per actor, and the batches its model runs at once (1: one actor per core)",
    )
    add("--force", action="store_true", help="start over, replacing an earlier output in --output")
    add("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedops.embed.job import EmbedConfig, run_embed

    # `--model ''` means the bundled model, as an unset --model does.
    result = run_embed(EmbedConfig.from_flags({**vars(args), "model": args.model or None}))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    if result.already_complete:
        print(f"{result.output} already holds all {result.count} embeddings of this plan; nothing to do")
        return 0
    print(f"embedded {result.count} passages with {result.model} into {result.shards} shard(s) in {result.output}")
    if result.engine == "ray":
        print(f"  on Ray: {result.nodes} node(s)")
    if result.resumed_shards:
        print(f"  resumed: {result.resumed_shards} shard(s) were already written by an earlier run")
    print(f"  vectors: {result.dim} x {result.vector_dtype}{', unit length' if result.normalized else ''}")
    print(f"  {result.seconds:.1f} s, {result.texts_per_second:.1f} passages/s")
    if result.truncated:
        print(f"  {result.truncated} passage(s) were longer than the window and cut (see --max-seq-length)")
    if result.empty:
        print(f"  {result.empty} passage(s) have no text and got the empty text's vector")
    return 0
