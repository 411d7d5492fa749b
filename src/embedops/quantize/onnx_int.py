"""Integer quantization of an fp32 ONNX graph with ONNX Runtime's own tools.

int8, rowwise (the default): every MatMul by a constant weight runs as an int8 MatMulIntegerToFloat whose
input is scaled per row at run time and whose weight is scaled per output column, and the
token-embedding table is int8 with one scale per row. Nothing is scaled across the rows of a batch,
so a text gets the same vector alone and in any batch (quantize/rowwise.py). int8, dynamic
(`--int8-scheme dynamic`): ONNX Runtime's dynamic quantization, which scales each MatMul input per
tensor, that is per batch, with the kernel configuration of the target CPU. int4: weight-only and
block-wise, the token-embedding table in 4 bits (GatherBlockQuantized) and every MatMul weight in 8
bits (MatMulNBits). On all-MiniLM-L6-v2 that file is 81% of int8's; 4-bit MatMul weights as well would
make it 62% of int8's but drift four times as much as dynamic int8.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedops.errors import MissingDependencyError
from embedops.quantize.calibrate import Tokenize
from embedops.quantize.kernels import Int8Kernel, this_cpu
from embedops.quantize.steps import Steps

if TYPE_CHECKING:
    import onnx


def quantize_int8(
    source: Path,
    target: Path,
    scheme: str,
    kernel: Int8Kernel,
    tokenize: Tokenize,
    calibration_data: str | None,
    steps: Steps,
) -> dict[str, object]:
    """Write the int8 graph of `source` to `target`; return what to record in the manifest.

    `tokenize` turns texts into the graph's inputs; the rowwise graph is smoothed on the texts of
    `calibration_data` (a pairs file; None: the bundled general-domain sentences).
    """
    if scheme == "dynamic":
        steps.start(f"quantizing to int8 for {kernel.name} (ONNX Runtime's dynamic scheme)")
        record = _dynamic_int8(source, target, kernel)
    else:
        record = _rowwise_int8(source, target, kernel, tokenize, calibration_data, steps)
    return {**record, "kernel": kernel.name, "cpu": this_cpu()}


def _dynamic_int8(source: Path, target: Path, kernel: Int8Kernel) -> dict[str, object]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type = QuantType.QInt8 if kernel.signed_weights else QuantType.QUInt8
    quantize_dynamic(
        source,
        target,
        per_channel=True,
        reduce_range=kernel.reduce_range,
        weight_type=weight_type,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )
    return {
        "method": "onnx-dynamic-int8",
        "batch_invariant": False,
        "weights": weight_type.name,
        "per_channel": True,
        "reduce_range": kernel.reduce_range,
    }


def _rowwise_int8(
    source: Path, target: Path, kernel: Int8Kernel, tokenize: Tokenize, calibration_data: str | None, steps: Steps
) -> dict[str, object]:
    import onnx

    from embedops.quantize.calibrate import calibration_texts, channel_maxima
    from embedops.quantize.embedding_rows import int8_embedding_rows
    from embedops.quantize.rowwise import quantized_inputs, rowwise_int8_matmuls

    model = onnx.load(str(source))
    calibration = calibration_texts(calibration_data)
    steps.start(f"calibrating the activation smoothing on {len(calibration)} texts")
    maxima = channel_maxima(model, quantized_inputs(model), tokenize, calibration)
    steps.start(f"quantizing to int8 for {kernel.name} (activations per row, weights per column)")
    tables = int8_embedding_rows(model)
    matmuls = rowwise_int8_matmuls(model, signed_weights=kernel.signed_weights, channel_max=maxima)
    onnx.save_model(model, str(target))
    return {
        "method": "onnx-rowwise-int8",
        "batch_invariant": True,
        "matmuls": {
            "count": matmuls,
            "activations": "int8 per row, at run time",
            "weights": "int8 per column",
            "smoothing": {
                "exponent": 0.5,
                "calibration": calibration_data or "built-in general-domain sentences",
                "calibration_texts": len(calibration),
            },
        },
        "weights": "QInt8" if kernel.signed_weights else "QUInt8",
        "embeddings": {"tables": tables, "weights": "int8 per row"},
    }


def require_int4_support() -> None:
    """ONNX Runtime's 4-bit quantizer imports `onnx_ir`, which onnxruntime does not install itself."""
    try:
        import onnx_ir  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("onnx-ir", "onnx") from exc


# MatMul weights keep 8 bits: at 4 bits they carried nearly all of the drift on all-MiniLM-L6-v2
# (0.031 of 0.035, whatever the block size or symmetry), while the 4-bit embedding table costs 0.003.
MATMUL_BITS = 8
# Block 64, not 128: with 128-wide blocks ONNX Runtime 1.32's MatMulNBits on an AVX-512 VNNI/AMX Xeon gave a
# text another vector when the batch padded it (lowest cosine 0.9995; 0.9999998 at 64), and 64 drifts less.
MATMUL_BLOCK = 64
ACCURACY_LEVEL = 4  # int8 activations inside MatMulNBits; level 0 (fp32) measured no closer


def quantize_int4(source: Path, target: Path, block_size: int) -> dict[str, object]:
    """Write the weight-only 4/8-bit graph of `source` to `target`; return what to record in the manifest.

    The token-embedding table (about half of a small encoder's weights) is stored in 4 bits with
    `block_size`-wide blocks (GatherBlockQuantized); every MatMul weight in 8 bits (MatMulNBits).
    """
    import onnx

    model = onnx.load(str(source))
    model = _weight_only(model, "Gather", bits=4, block_size=block_size)
    matmul_block = _matmul_block(model, MATMUL_BLOCK)
    model = _weight_only(model, "MatMul", bits=MATMUL_BITS, block_size=matmul_block)
    onnx.save_model(model, str(target))
    return {
        "method": "onnx-weight-only-int4-embeddings-int8-matmuls",
        "batch_invariant": True,
        "embeddings": {"op": "GatherBlockQuantized", "bits": 4, "block_size": block_size, "symmetric": True},
        "matmuls": {
            "op": "MatMulNBits",
            "bits": MATMUL_BITS,
            "block_size": matmul_block,
            "symmetric": True,
            "accuracy_level": ACCURACY_LEVEL,
        },
    }


def _weight_only(model: onnx.ModelProto, op_type: str, *, bits: int, block_size: int) -> onnx.ModelProto:
    """Block-wise symmetric quantization of the constant weights of every `op_type` node."""
    import numpy as np

    quantizer = _block_quantizer()(
        model,
        bits=bits,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=ACCURACY_LEVEL,
        op_types_to_quantize=(op_type,),
        quant_axes=(("MatMul", 0), ("Gather", 1)),  # along the reduced axis / along each embedding row
    )
    # All-zero blocks have scale 0 and stay 0. Its line per node (INFO) shows with --verbose only (quantize.steps).
    with np.errstate(divide="ignore", invalid="ignore"):
        quantizer.process()
    return quantizer.model.model


def _block_quantizer() -> Any:
    """ONNX Runtime's MatMulNBitsQuantizer. Its module calls logging.basicConfig(level=INFO) when first
    imported, which would print every library's INFO records from then on (and have sentence-transformers
    draw its bars); the root logger is put back as it was."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    root.setLevel(level)
    root.handlers[:] = handlers
    return MatMulNBitsQuantizer


def _matmul_block(model: onnx.ModelProto, block: int) -> int:
    """`block`, or the largest power of two within the shortest MatMul weight's input dimension,
    so a small model's weights are not padded out to a block they cannot fill."""
    weights = {initializer.name: initializer for initializer in model.graph.initializer}
    depths = [
        weights[node.input[1]].dims[0]
        for node in model.graph.node
        if node.op_type == "MatMul" and node.input[1] in weights and len(weights[node.input[1]].dims) == 2
    ]
    shortest = min(depths, default=block)
    return max(16, min(block, 1 << (shortest.bit_length() - 1)))
