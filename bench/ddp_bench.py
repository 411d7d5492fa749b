"""Training throughput in one process against N processes (DDP, gloo on CPU, negatives gathered).

Both runs train the bundled all-MiniLM-L6-v2 on the same WikiQA pairs with the same effective batch
(one process: --batch-size B; N processes: B / N each, gathered, so every step ranks the same B
candidates), one epoch, through `embedops finetune` as a user would run it. Prints the training loop's
pairs/s (the manifest's `pairs_per_second`) and the whole command's, with the CPU and versions.

    python bench/ddp_bench.py [--pairs 128] [--batch-size 32] [--nproc 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikiqa" / "train-pairs.tsv"


def run(data: Path, output: Path, batch_size: int, nproc: int, max_seq_length: int) -> tuple[float, float]:
    """One `embedops finetune`: returns (training pairs/s from the manifest, whole-command pairs/s)."""
    command = [sys.executable, "-m", "embedops", "finetune", "--data", str(data), "--output", str(output)]
    command += ["--batch-size", str(batch_size), "--device", "cpu", "--max-seq-length", str(max_seq_length)]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    training = json.loads((output / "embedops.json").read_text())["training"]
    return training["pairs_per_second"], training["pairs"] / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32, help="effective batch (per process: this / nproc)")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=128)
    args = parser.parse_args()
    if not DATA.is_file():
        raise SystemExit(f"WikiQA pairs not found at {DATA}")
    if args.batch_size % args.nproc:
        raise SystemExit("--batch-size must divide by --nproc (same effective batch in both runs)")

    lines = DATA.read_text(encoding="utf-8").splitlines()[: args.pairs]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.tsv"
        data.write_text("\n".join(lines) + "\n", encoding="utf-8")
        rows = {
            f"1 process, batch {args.batch_size}": run(
                data, Path(tmp) / "one", args.batch_size, 1, args.max_seq_length
            ),
            f"{args.nproc} processes, {args.batch_size // args.nproc} each, gathered": run(
                data, Path(tmp) / "many", args.batch_size // args.nproc, args.nproc, args.max_seq_length
            ),
        }
    from serve_bench import cpu_line  # bench/ is on sys.path when this script runs

    print(f"\n{len(lines)} WikiQA pairs, effective batch {args.batch_size}, 1 epoch, all-MiniLM-L6-v2, CPU")
    print(cpu_line() + "\n")
    base_train, base_total = next(iter(rows.values()))
    print("| run | train pairs/s | vs 1 process | end-to-end pairs/s | vs 1 process |")
    print("|---|---:|---:|---:|---:|")
    for name, (train, total) in rows.items():
        print(f"| {name} | {train:.1f} | {train / base_train:.2f}x | {total:.1f} | {total / base_total:.2f}x |")


if __name__ == "__main__":
    main()
