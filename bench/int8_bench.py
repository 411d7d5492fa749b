"""int8 schemes side by side: batch invariance, quality against fp32, drift, and in-process speed.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/int8_bench.py [--model REF] [--finetuned DIR] [--rounds 20]

Both int8 graphs are built from the same source with `embedops quantize`: rowwise (the default) and
dynamic (`--int8-scheme dynamic`). Invariance: `--texts` texts from WikiQA (questions and passages,
so lengths vary) are embedded alone, then `--rounds` times shuffled into batches of 8 and of 32 that
cover every text; the table gives the mean and lowest cosine between a text's vector alone and in a
batch, in process (the server's engine) and through a real `embedops serve` over HTTP. Quality:
WikiQA test nDCG@10 and STS-B test Spearman of each form of `--model`, and climate-fever test nDCG@10
of each form of `--finetuned` (a model fine-tuned on climate-fever's train pairs), x100 against fp32.
Speed: one text alone (p50 over 3 s) and batches of 8 texts of about 54 tokens (texts/s), each in its
own engine on every core, the forms taking turns so drift on a shared machine hits all alike;
bench/serve_bench.py measures served speed against Infinity.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SCHEMES = ("rowwise", "dynamic")
SIZES = (8, 32)


def build(model: str, out_dir: Path) -> dict[str, Path]:
    """The source and its two int8 artifacts."""
    from embedops.quantize import QuantizeConfig, quantize

    forms = {"fp32": Path(model)}
    for scheme in SCHEMES:
        target = out_dir / scheme
        if not (target / "embedops.json").is_file():
            quantize(QuantizeConfig(model_path=model, output=str(target), int8_scheme=scheme, force=True))
        forms[f"int8 {scheme}"] = target
    return forms


def invariance_texts(count: int) -> list[str]:
    from embedops.evaluate.datasets import read_beir_texts

    texts = list(read_beir_texts(DATA / "wikiqa" / "queries.jsonl").values())
    texts += list(read_beir_texts(DATA / "wikiqa" / "corpus.jsonl").values())
    return random.Random(0).sample(texts, count)


def batched_cosines(embed, texts: list[str], alone: np.ndarray, rounds: int) -> np.ndarray:
    """Cosine between each text's vector `alone` and its vector inside `rounds` shuffles of the texts into
    batches of each size (texts x sizes x rounds values)."""
    rng = random.Random(1)
    found: list[np.ndarray] = []
    for size in SIZES:
        for _ in range(rounds):
            order = list(range(len(texts)))
            rng.shuffle(order)
            for start in range(0, len(order), size):
                chosen = order[start : start + size]
                found.append((embed([texts[i] for i in chosen]) * alone[chosen]).sum(axis=1))
    return np.concatenate(found)


def cosines_in_batches(embed, texts: list[str], rounds: int) -> tuple[float, float]:
    """Mean and lowest cosine between each text alone and the same text in shuffled batches of each size."""
    cosines = batched_cosines(embed, texts, np.concatenate([embed([text]) for text in texts]), rounds)
    return float(cosines.mean()), float(cosines.min())


def engine_embed(path: Path):
    from embedops.models import resolve
    from embedops.serve.engine import Engine

    engine = Engine(resolve(str(path)))
    return lambda texts: engine.embed(engine.tokenize(texts, truncate=True))


def server_embed(path: Path):
    """A real `embedops serve` on `path` (serve_bench's launcher); returns its embed function and process."""
    import httpx
    from serve_bench import serve  # bench/ is on sys.path when this script runs

    url, (process, _), route, field = serve(str(path), None)
    client = httpx.Client(timeout=120)

    def embed(texts: list[str]) -> np.ndarray:
        response = client.post(f"{url}{route}", json={field: texts})
        response.raise_for_status()
        return np.asarray(response.json()["embeddings"], dtype=np.float32)

    return embed, process


def invariance(forms: dict[str, Path], texts: list[str], rounds: int) -> list[tuple[str, str, float, float]]:
    rows = []
    for label, path in forms.items():
        if label == "fp32":
            continue
        rows.append((label, "in process", *cosines_in_batches(engine_embed(path), texts, rounds)))
        embed, process = server_embed(path)
        try:
            rows.append((label, "server", *cosines_in_batches(embed, texts, rounds)))
        finally:
            process.kill()
            process.wait()
    return rows


def quality(forms: dict[str, Path], data: Path, split: str, metric: str) -> dict[str, float]:
    from embedops.evaluate import EvalConfig, evaluate

    result = evaluate(EvalConfig(models=[str(path) for path in forms.values()], data=data, split=split))
    return {label: 100 * model.metrics[metric] for label, model in zip(forms, result.models, strict=True)}


def speed(forms: dict[str, Path], turns: int = 3) -> dict[str, tuple[float, float]]:
    """(p50 ms of one text, texts/s in batches of 8 ~54-token texts) per form, forms taking turns."""
    one = "How do I reset my password if I no longer have access to the email address on my account?"
    batch = [
        f"{one} The request number {i} asks about account recovery, two-factor codes and support." for i in range(8)
    ]
    embeds = {label: engine_embed(path) for label, path in forms.items()}
    latencies: dict[str, list[float]] = {label: [] for label in forms}
    rates: dict[str, list[float]] = {label: [] for label in forms}
    for _ in range(turns):
        for label, embed in embeds.items():
            embed(batch)
            started = time.perf_counter()
            while time.perf_counter() - started < 1.5:
                tick = time.perf_counter()
                embed([one])
                latencies[label].append(time.perf_counter() - tick)
            started, done = time.perf_counter(), 0
            while time.perf_counter() - started < 1.5:
                embed(batch)
                done += len(batch)
            rates[label].append(done / (time.perf_counter() - started))
    return {label: (1000 * float(np.median(latencies[label])), float(np.median(rates[label]))) for label in forms}


def main() -> None:
    from serve_bench import cpu_line

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--finetuned", help="a model fine-tuned on climate-fever, for its quality row")
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/int8-bench"))
    parser.add_argument("--texts", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--skip", nargs="*", default=[], choices=("invariance", "quality", "speed"))
    args = parser.parse_args()
    print(cpu_line())
    forms = build(args.model, args.out_dir / "base")
    results: dict[str, object] = {"cpu": cpu_line(), "model": args.model}
    print("\ndrift from fp32 on the built-in sentences (embedops quantize's own check):")
    for label, path in forms.items():
        if label != "fp32":
            manifest = json.loads((path / "embedops.json").read_text())
            drift = manifest["quantization"]["drift"]
            size = (path / manifest["file"]).stat().st_size / 1e6
            print(
                f"  {label:15s} drift {drift['drift']:.4f}  min cosine {drift['min_cosine']:.4f}  "
                f"top-10 overlap {drift['top10_overlap']:.1%}  file {size:.1f} MB"
            )
    if "invariance" not in args.skip:
        texts = invariance_texts(args.texts)
        rows = invariance(forms, texts, args.rounds)
        results["invariance"] = rows
        batches = args.rounds * sum(-(-len(texts) // size) for size in SIZES)
        print(
            f"\nbatch invariance: {len(texts)} texts alone against {args.rounds} shuffles into batches of "
            f"{' and '.join(map(str, SIZES))} ({batches} batches)"
        )
        print("| form | path | mean cosine | lowest cosine |\n|---|---|---|---|")
        for label, where, mean, lowest in rows:
            print(f"| {label} | {where} | {mean:.7f} | {lowest:.7f} |")
    if "quality" not in args.skip:
        tasks = [
            ("WikiQA test nDCG@10", forms, DATA / "wikiqa", "test", "ndcg@10"),
            ("STS-B test Spearman", forms, DATA / "stsb" / "sts-test.csv", "test", "spearman"),
        ]
        if args.finetuned:
            tuned = build(args.finetuned, args.out_dir / "finetuned")
            tasks.insert(
                1, ("climate-fever test nDCG@10 (fine-tuned)", tuned, DATA / "climate-fever", "test", "ndcg@10")
            )
        print("\nquality x100 (difference from fp32 in points)")
        print("| task | fp32 | int8 rowwise | int8 dynamic |\n|---|---|---|---|")
        table = {}
        for name, task_forms, data, split, metric in tasks:
            scores = quality(task_forms, data, split, metric)
            table[name] = scores
            cells = [f"{scores['fp32']:.2f}"] + [
                f"{scores[f'int8 {s}']:.2f} ({scores[f'int8 {s}'] - scores['fp32']:+.2f})" for s in SCHEMES
            ]
            print(f"| {name} | {' | '.join(cells)} |")
        results["quality"] = table
    if "speed" not in args.skip:
        timed = speed(forms)
        results["speed"] = timed
        base_ms, base_rate = timed["int8 dynamic"]
        print("\nin-process speed (the server's engine, every core); ratios against int8 dynamic")
        print("| form | one text p50 ms | x | batch of 8 texts/s | x |\n|---|---|---|---|---|")
        for label, (ms, rate) in timed.items():
            print(f"| {label} | {ms:.2f} | {base_ms / ms:.2f} | {rate:.0f} | {rate / base_rate:.2f} |")
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
