"""Corpus re-embedding benchmark: `embedops embed` against sentence-transformers' `encode`, and its memory.

    python bench/embed_bench.py [--sizes 10000,200000] [--data ../shared/data] [--work /tmp/embed-bench]

Model: the bundled all-MiniLM-L6-v2 quantized to ONNX int8 by `embedops quantize` (what the pipeline
ships). Corpus: WikiQA's passages (BEIR corpus.jsonl, title + text), repeated with fresh ids up to
each size. `encode` row: `SentenceTransformer.encode(batch_size=32)` of the same artifact in a fresh
process, over the first 10k passages, after a warm-up, timing only the call. `embed` rows: the CLI in
a fresh process; passages/s of its model work as it reports it (tokenize, forward, finish; not the
model load or the input scan), and the peak RSS of that process (ru_maxrss). Every ratio is taken
within one run of this script.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
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


def embed_command(artifact: Path, source: Path, output: Path) -> list[str]:
    command = [sys.executable, "-m", "embedops", "embed", "--model", str(artifact), "--input", str(source)]
    return [*command, "--output", str(output), "--force", "--json"]


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
    summary, rss = measured([sys.executable, __file__, "--encode", str(artifact), str(small)])
    rows = [("encode (sentence-transformers)", 10_000, summary["texts_per_second"], rss)]
    for size in sizes:
        path = small if size == 10_000 else corpus(source, size, args.work / f"corpus-{size}.jsonl")
        summary, rss = measured(embed_command(artifact, path, args.work / f"out-{size}"))
        rows.append(("embed (local)", size, summary["texts_per_second"], rss))
    baseline = rows[0][2]
    facts = machine()
    print(f"\n{datetime.date.today()} · {facts['cpu']} · {facts['cores']} cores · flags: {facts['flags']}")
    print(f"python {facts['python']}, torch {facts['torch']}, sentence-transformers {facts['sentence-transformers']}")
    print("model: all-MiniLM-L6-v2, ONNX int8 (embedops quantize); corpus: WikiQA passages (title + text)\n")
    print("| run | passages | passages/s | x encode | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for name, size, rate, rss in rows:
        print(f"| {name} | {size:,} | {rate:.1f} | {rate / baseline:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
