"""Corpus re-embedding benchmark: `embedops embed` against sentence-transformers' `encode`, and its memory.

    python bench/embed_bench.py [--sizes 10000,200000] [--rounds 2] [--ray] [--data ../shared/data]
                                [--work /tmp/embed-bench]

Model: the bundled all-MiniLM-L6-v2 quantized to ONNX int8 by `embedops quantize` (what the pipeline
ships). Corpus: WikiQA's passages (BEIR corpus.jsonl, title + text), repeated with fresh ids up to
each size. `encode` row: `SentenceTransformer.encode(batch_size=32)` of the same artifact in a fresh
process, over the first 10k passages, after a warm-up, timing only the call. `embed` rows: the CLI in
a fresh process; passages/s of its model work as it reports it (tokenize, forward, finish; not the
model load or the input scan), and the peak RSS of that process (ru_maxrss). Every ratio is taken
within one run of this script. `--ray` adds the job on Ray Data against clusters of one and two
nodes started on this machine (one CPU, so one actor, each; the driver's RSS is reported, its rate
includes starting the actors).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recipe_bench import machine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def corpus(source: Path, size: int, target: Path) -> Path:
    """`size` passages of `source`'s BEIR corpus, repeated with fresh ids where it has fewer."""
    records = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(target, "w", encoding="utf-8") as handle:
        for index in range(size):
            record = records[index % len(records)]
            handle.write(
                json.dumps({"_id": f"{index}", "title": record.get("title", ""), "text": record["text"]}) + "\n"
            )
    return target


def measured(command: list[str]) -> tuple[dict, float]:
    """The JSON a command prints and the peak RSS (MiB) of its process.

    The bench process itself loads no model: a child's ru_maxrss starts from its parent's size at fork.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{command[:4]} failed with status {status}")
    return json.loads(out), usage.ru_maxrss / 1024


def embed_command(artifact: Path, source: Path, output: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "embedops", "embed", "--model", str(artifact), "--input", str(source)]
    return [*command, "--output", str(output), "--force", "--json", *extra]


@contextmanager
def ray_cluster(nodes: int) -> Iterator[str]:
    """A Ray head and `nodes - 1` more nodes on this machine, one CPU (one actor) each."""
    ray = str(Path(sys.executable).parent / "ray")
    common = ["--num-cpus", "1", "--object-store-memory", str(300 << 20), "--disable-usage-stats"]
    address = "127.0.0.1:6399"
    try:
        subprocess.run(
            [ray, "start", "--head", "--port", "6399", "--include-dashboard=false", *common],
            check=True,
            capture_output=True,
        )
        for _ in range(nodes - 1):
            subprocess.run([ray, "start", "--address", address, *common], check=True, capture_output=True)
        yield address
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True)


def encode(artifact: Path, source: Path) -> None:
    """Print sentence-transformers' encode rate (passages/s) over the corpus as JSON."""
    from embedops.embed.sources import open_source
    from embedops.models import load

    texts = [passage.text for passage in open_source(source)]
    model = load(artifact, device="cpu")
    model.encode(texts[:256], batch_size=32)
    started = time.perf_counter()
    model.encode(texts, batch_size=32)
    print(json.dumps({"texts_per_second": len(texts) / (time.perf_counter() - started)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,200000")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/embed-bench"))
    parser.add_argument("--rounds", type=int, default=2, help="repeats of the 10k rows (the CPU's speed drifts)")
    parser.add_argument("--ray", action="store_true", help="add Ray rows: 1 and 2 nodes on this machine")
    parser.add_argument("--encode", nargs=2, type=Path, metavar=("ARTIFACT", "CORPUS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.encode:
        encode(*args.encode)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    artifact = args.work / "minilm-int8"
    if not (artifact / "embedops.json").is_file():
        quantize = ["quantize", "--model-path", "sentence-transformers/all-MiniLM-L6-v2", "--dtype", "int8"]
        subprocess.run([sys.executable, "-m", "embedops", *quantize, "--output", str(artifact)], check=True)
    sizes = [int(size) for size in args.sizes.split(",")]
    source = args.data / "wikiqa" / "corpus.jsonl"
    small = corpus(source, 10_000, args.work / "corpus-10000.jsonl")
    rows: list[tuple[int, str, int, float, float]] = []  # round, run, passages, passages/s, RSS
    baselines = {}
    for round_ in range(1, args.rounds + 1):
        summary, rss = measured([sys.executable, __file__, "--encode", str(artifact), str(small)])
        baselines[round_] = summary["texts_per_second"]
        rows.append((round_, "encode (sentence-transformers)", 10_000, summary["texts_per_second"], rss))
        summary, rss = measured(embed_command(artifact, small, args.work / "out-10000"))
        rows.append((round_, "embed (local)", 10_000, summary["texts_per_second"], rss))
        if args.ray:
            # Shards of 1,000 so that ten shards can spread over the actors.
            for nodes in (1, 2):
                with ray_cluster(nodes) as address:
                    extra = ("--engine", "ray", "--ray-address", address, "--shard-size", "1000")
                    summary, rss = measured(embed_command(artifact, small, args.work / f"out-ray-{nodes}", *extra))
                name = f"embed --engine ray, {summary['nodes']} node(s)"
                rows.append((round_, name, 10_000, summary["texts_per_second"], rss))
    for size in (size for size in sizes if size != 10_000):
        path = corpus(source, size, args.work / f"corpus-{size}.jsonl")
        summary, rss = measured(embed_command(artifact, path, args.work / f"out-{size}"))
        rows.append((args.rounds, "embed (local)", size, summary["texts_per_second"], rss))
    facts = machine()
    print(f"\n{datetime.date.today()} · {facts['cpu']} · {facts['cores']} cores · flags: {facts['flags']}")
    print(f"python {facts['python']}, torch {facts['torch']}, sentence-transformers {facts['sentence-transformers']}")
    print("model: all-MiniLM-L6-v2, ONNX int8 (embedops quantize); corpus: WikiQA passages (title + text)\n")
    print("| round | run | passages | passages/s | x encode (same round) | peak RSS MiB |")
    print("|---:|---|---:|---:|---:|---:|")
    for round_, name, size, rate, rss in rows:
        print(f"| {round_} | {name} | {size:,} | {rate:.1f} | {rate / baselines[round_]:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
