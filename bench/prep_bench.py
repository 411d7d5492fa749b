"""`prep` on a large synthetic pairs file: wall time and peak memory against a plain validation pass.

Generates N pairs (default 200,000) with planted exact duplicates, near duplicates, self and empty
pairs, then runs, each in a fresh process so peak RSS is its own: (1) the baseline, reading and
validating every line with PairReader (what `finetune` does before training), and (2) `prep` with
the default MinHash near-duplicate filter. Prints a table with ratios against the baseline.

    python bench/prep_bench.py [--pairs 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BASELINE = """
import sys
from embedops.data import PairReader
for _ in PairReader(sys.argv[1]):
    pass
"""
PREP = """
import json, sys
from embedops.data.prep import PrepConfig, prep
result = prep(PrepConfig(data=sys.argv[1], output=sys.argv[2], removed=sys.argv[3]))
print(json.dumps({"removed": result.removed, "train": result.train, "eval": result.eval}))
"""


def synthetic(path: Path, count: int) -> dict[str, int]:
    """Random-word pairs; about 3% exact and 3% near duplicates, 0.5% self and 0.5% invisible-only pairs."""
    rng = random.Random(0)
    vocabulary = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9))) for _ in range(5000)]
    planted = {"exact": 0, "near": 0, "self": 0, "empty": 0}
    rows: list[tuple[str, str]] = []
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(count):
            roll = rng.random()
            if rows and roll < 0.03:
                anchor, positive = rng.choice(rows)
                planted["exact"] += 1
            elif rows and roll < 0.06:
                anchor, positive = rng.choice(rows)
                anchor, positive = anchor.upper() + " ?", positive + " ok"
                planted["near"] += 1
            elif roll < 0.065:
                anchor = positive = " ".join(rng.choices(vocabulary, k=6))
                planted["self"] += 1
            elif roll < 0.07:
                anchor, positive = "\u200b", " ".join(rng.choices(vocabulary, k=6))
                planted["empty"] += 1
            else:
                anchor = " ".join(rng.choices(vocabulary, k=rng.randint(5, 12)))
                positive = " ".join(rng.choices(vocabulary, k=rng.randint(15, 40)))
                if len(rows) < 20000:
                    rows.append((anchor, positive))
            handle.write(f"{anchor}\t{positive}\n")
    return planted


def measure(script: str, *args: str) -> tuple[float, float, str]:
    """Seconds, peak RSS (MiB) and stdout of `script` in a fresh interpreter."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        raise SystemExit("peak RSS of the child did not exceed the previous child's; run the steps in order")
    return seconds, peak / 1024, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200_000)
    args = parser.parse_args()
    import numpy
    import tokenizers

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "pairs.tsv"
        planted = synthetic(data, args.pairs)
        size_mib = data.stat().st_size / 2**20
        base_s, base_mib, _ = measure(BASELINE, str(data))
        prep_s, prep_mib, printed = measure(PREP, str(data), str(work / "clean.tsv"), str(work / "removed.jsonl"))
    result = json.loads(printed.strip().splitlines()[-1])
    print(
        f"\n{args.pairs} synthetic pairs ({size_mib:.0f} MiB), planted {planted}; CPU ({os.cpu_count()} cores, "
        f"{platform.machine()}), Python {platform.python_version()}, numpy {numpy.__version__}, "
        f"tokenizers {tokenizers.__version__}\nprep removed {result['removed']}, kept {result['train']} train + "
        f"{result['eval']} eval\n"
    )
    print("| step | seconds | vs baseline | pairs/s | peak RSS MiB | vs baseline |")
    print("|---|---|---|---|---|---|")
    for name, seconds, mib in (("validate only (PairReader)", base_s, base_mib), ("prep (minhash)", prep_s, prep_mib)):
        print(
            f"| {name} | {seconds:.1f} | {seconds / base_s:.2f}x | {args.pairs / seconds:,.0f} | {mib:.0f} "
            f"| {mib / base_mib:.2f}x |"
        )


if __name__ == "__main__":
    main()
