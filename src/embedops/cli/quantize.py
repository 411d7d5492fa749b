"""`embedops quantize`: the seed's flags (--model-path --output --dtype) plus backend, drift gate and check data."""

from __future__ import annotations

import argparse
import json

from embedops.configs import help_with_defaults

ORDER = 30
_DTYPES = ("int8", "int4", "fp16", "bf16")
_BACKENDS = ("auto", "onnx", "torch", "bnb")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quantize",
        help="quantize a model (int8/int4 ONNX for CPUs, fp16/bf16 or bitsandbytes for GPUs) with a drift check",
        description="Write a quantized artifact and compare its embeddings with the source's before publishing it.",
        formatter_class=help_with_defaults("embedops.quantize.config:QuantizeConfig"),
    )
    parser.add_argument("--model-path", required=True, help="artifact dir, SentenceTransformer dir or hub id")
    parser.add_argument("--output", required=True, help="artifact directory to create")
    parser.add_argument("--dtype", choices=_DTYPES, help="target precision")
    parser.add_argument(
        "--backend",
        choices=_BACKENDS,
        help="auto: onnx for int8/int4 (CPU), torch for fp16/bf16; bnb: bitsandbytes on CUDA",
    )
    parser.add_argument(
        "--target-cpu",
        choices=("auto", "avx512_vnni", "avx512", "avx2", "arm64"),
        help="int8 kernel configuration to build for (auto: the CPU this runs on)",
    )
    parser.add_argument(
        "--int8-scheme",
        choices=("rowwise", "dynamic"),
        help="rowwise: activations scaled per token, so a text gets the same vector in any batch; "
        "dynamic: activations scaled per batch (ONNX Runtime's quantize_dynamic)",
    )
    parser.add_argument("--block-size", type=int, help="int4: embedding-table weights per 4-bit block")
    parser.add_argument(
        "--calibration-data",
        metavar="FILE",
        help="int8: pairs file whose texts calibrate the activation smoothing (default: built-in general sentences)",
    )
    drift = parser.add_argument_group("drift check")
    drift.add_argument("--check-data", metavar="FILE", help="pairs file to compare on (default: built-in sentences)")
    drift.add_argument("--check-samples", type=int, metavar="N", help="texts to compare at most")
    drift.add_argument(
        "--max-drift",
        type=float,
        metavar="D",
        help="fail (exit 1, nothing written) when 1 - mean cosine exceeds D, e.g. 0.02",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing output artifact")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    parser.add_argument(
        "--verbose", action="store_true", help="show ONNX Runtime's own log lines (one per quantized node)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedops.artifact import summary
    from embedops.quantize import QuantizeConfig, quantize

    config = QuantizeConfig.from_flags(vars(args))
    result = quantize(config)
    if args.json:
        print(json.dumps({"path": str(result.path), **result.manifest.to_dict()}, indent=2))
    else:
        print(summary(result.manifest, result.path))
        print(f"drift check {result.drift.verdict(config.max_drift)}")
    return 0
