"""Quantization benchmark: size, memory, CPU throughput and quality of one model in four forms.

    python bench/quantize_bench.py [--model REF] [--data ../shared/data] [--out-dir /tmp/qbench]

Forms: torch fp32 (the baseline), ONNX fp32, ONNX int8 and ONNX int4, the last two made with
`embedops.quantize`. Each form is measured in its own fresh process: peak RSS once the model is
loaded and has encoded the throughput texts, before the quality runs. Every form is loaded through
sentence-transformers and torch here, which dominate that figure; bench/serve_bench.py reports the
serving footprint, where ONNX artifacts run without torch. Quality: WikiQA test nDCG@10 over the whole
corpus, STS-B test Spearman (x100).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
FORMS = ("torch-fp32", "onnx-fp32", "onnx-int8", "onnx-int4")


def build_forms(model: str, out_dir: Path) -> dict[str, Path]:
    """Artifacts for each form (the ONNX fp32 one laid out like the quantized ones)."""
    from embedops.artifact import ArtifactBuilder
    from embedops.models import load, resolve
    from embedops.quantize import QuantizeConfig, quantize
    from embedops.quantize.export import export_onnx

    ref = resolve(model)
    forms = {"torch-fp32": ref.path}
    for dtype in ("int8", "int4"):
        forms[f"onnx-{dtype}"] = quantize(
            QuantizeConfig(model_path=model, output=str(out_dir / dtype), dtype=dtype, force=True)
        ).path
    fp32 = out_dir / "onnx-fp32"
    with ArtifactBuilder(fp32, force=True) as builder:
        source = load(ref, device="cpu")
        source.save(str(builder.path), create_model_card=False)
        (builder.path / "model.safetensors").unlink()
        export_onnx(source, builder.path / "onnx" / "model.onnx")
        manifest = json.loads((forms["onnx-int8"] / "embedops.json").read_text())
        from embedops.artifact import Manifest

        builder.publish(
            Manifest(
                **{
                    **manifest,
                    "file": "onnx/model.onnx",
                    "dtype": "fp32",
                    "quantization": None,
                    "files_sha256": {},
                    "created": None,
                }
            )
        )
    forms["onnx-fp32"] = fp32
    return forms


def weights_bytes(path: Path) -> int:
    from embedops.models import resolve

    manifest = resolve(path).manifest
    return (path / (manifest.file or "model.safetensors")).stat().st_size


def texts_of_length(tokenizer, corpus: list[str], tokens: int, count: int) -> list[str]:
    """`count` texts of about `tokens` tokens, made by joining consecutive WikiQA sentences."""
    texts, current, index = [], [], 0
    while len(texts) < count:
        current.append(corpus[index % len(corpus)])
        index += 1
        if len(tokenizer(" ".join(current))["input_ids"]) >= tokens:
            texts.append(" ".join(current))
            current = []
    return texts


def read_jsonl(path: Path) -> dict[str, str]:
    with open(path, encoding="utf-8") as handle:
        return {row["_id"]: row["text"] for row in map(json.loads, handle)}


def worker(form: str, path: Path, data: Path, *, retrieval: bool = True) -> dict:
    """Load one form, measure throughput and the memory so far, then quality; runs in its own process."""
    import torch
    from scipy.stats import spearmanr

    from embedops.models import load

    torch.set_num_threads(os.cpu_count() or 1)
    model = load(path, device="cpu")
    corpus = read_jsonl(data / "wikiqa" / "corpus.jsonl")
    sentences = list(corpus.values())
    result: dict = {"form": form}
    for tokens, count in ((60, 256), (250, 64)):
        texts = texts_of_length(model.tokenizer, sentences, tokens, count)
        model.encode(texts[:32], batch_size=32)
        started = time.perf_counter()
        model.encode(texts, batch_size=32)
        result[f"texts_per_s_{tokens}"] = round(count / (time.perf_counter() - started), 1)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if retrieval:
        result["ndcg@10"] = wikiqa_ndcg(model, corpus, data)
    with open(data / "stsb" / "sts-test.csv", encoding="utf-8") as handle:
        rows = [line.rstrip("\n").split("\t")[:7] for line in handle]
    first = model.encode([r[5] for r in rows], batch_size=64, normalize_embeddings=True)
    second = model.encode([r[6] for r in rows], batch_size=64, normalize_embeddings=True)
    result["sts_spearman"] = round(100 * spearmanr((first * second).sum(1), [float(r[4]) for r in rows])[0], 2)
    return result


def wikiqa_ndcg(model, corpus: dict[str, str], data: Path) -> float:
    """nDCG@10 (x100) on WikiQA test over the whole corpus, by sentence-transformers' own evaluator."""
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    queries = read_jsonl(data / "wikiqa" / "queries.jsonl")
    relevant: dict[str, set[str]] = {}
    with open(data / "wikiqa" / "qrels" / "test.tsv", encoding="utf-8") as handle:
        for row in list(csv.reader(handle, delimiter="\t"))[1:]:
            relevant.setdefault(row[0], set()).add(row[1])
    evaluator = InformationRetrievalEvaluator(
        {q: queries[q] for q in relevant},
        corpus,
        relevant,
        name="wikiqa-test",
        batch_size=64,
        show_progress_bar=False,
    )
    return round(100 * evaluator(model)["wikiqa-test_cosine_ndcg@10"], 2)


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = [
        "| form | weights MiB | size vs fp32 | RSS MiB loaded+encoding | texts/s ~60 tok | x | texts/s ~250 tok | x "
        "| WikiQA nDCG@10 | Δ | STS-B Spearman | Δ |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['form']} | {r['bytes'] / 2**20:.1f} | {r['bytes'] / base['bytes']:.0%} | {r['peak_rss_mib']:.0f} "
            f"| {r['texts_per_s_60']:.1f} | {r['texts_per_s_60'] / base['texts_per_s_60']:.2f} "
            f"| {r['texts_per_s_250']:.1f} | {r['texts_per_s_250'] / base['texts_per_s_250']:.2f} "
            + (f"| {r['ndcg@10']:.2f} | {r['ndcg@10'] - base['ndcg@10']:+.2f} " if "ndcg@10" in r else "| – | – ")
            + f"| {r['sts_spearman']:.2f} | {r['sts_spearman'] - base['sts_spearman']:+.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="model reference")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/embedops-quantize-bench"))
    parser.add_argument(
        "--skip-retrieval", action="store_true", help="leave out WikiQA nDCG@10 (encoding its corpus dominates the run)"
    )
    parser.add_argument("--worker", nargs=2, metavar=("FORM", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]), args.data, retrieval=not args.skip_retrieval)))
        return 0
    if not (args.data / "wikiqa").is_dir():
        parser.error(f"datasets not found at {args.data}")
    forms = build_forms(args.model, args.out_dir)
    rows = []
    for form in FORMS:
        command = [sys.executable, __file__, "--data", str(args.data), "--worker", form, str(forms[form])]
        command += ["--skip-retrieval"] if args.skip_retrieval else []
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        row = json.loads(output.strip().splitlines()[-1]) | {"bytes": weights_bytes(forms[form])}
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    print(f"model {args.model}; ratios against torch-fp32 measured in this run")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
