"""Integer quantization of an fp32 ONNX graph with ONNX Runtime's own tools.

int8: dynamic quantization (weights int8 per channel, activations quantized at run time), with the
kernel configuration of the target CPU. int4: weight-only and block-wise, the token-embedding table in
4 bits (GatherBlockQuantized) and every MatMul weight in 8 bits (MatMulNBits). On all-MiniLM-L6-v2
that file is 81% of int8's and drifts half as much; 4-bit MatMul weights as well would make it 62% of
int8's but drift four times as much as int8 (bench/RESULTS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from embedops.errors import MissingDependencyError
from embedops.quantize.kernels import Int8Kernel

if TYPE_CHECKING:
    import onnx


def quantize_int8(source: Path, target: Path, kernel: Int8Kernel) -> dict[str, object]:
    """Write the dynamic int8 graph of `source` to `target`; return what to record in the manifest."""
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
        "kernel": kernel.name,
        "weights": weight_type.name,
        "per_channel": True,
        "reduce_range": kernel.reduce_range,
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
MATMUL_BLOCK = 128  # block 32: drift 0.0037 instead of 0.0043, for 1 MB more of scales
ACCURACY_LEVEL = 4  # int8 activations inside MatMulNBits; level 0 (fp32) measured no closer


def quantize_int4(source: Path, target: Path, block_size: int) -> dict[str, object]:
    """Write the weight-only 4/8-bit graph of `source` to `target`; return what to record in the manifest.

    The token-embedding table (about half of a small encoder's weights) is stored in 4 bits with
    `block_size`-wide blocks (GatherBlockQuantized); every MatMul weight in 8 bits (MatMulNBits).
    """
    import onnx

    model = onnx.load(str(source))
    model = _weight_only(model, "Gather", bits=4, block_size=block_size)
    matmul_block = _matmul_block(model)
    model = _weight_only(model, "MatMul", bits=MATMUL_BITS, block_size=matmul_block)
    onnx.save_model(model, str(target))
    return {
        "method": "onnx-weight-only-int4-embeddings-int8-matmuls",
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
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=ACCURACY_LEVEL,
        op_types_to_quantize=(op_type,),
        quant_axes=(("MatMul", 0), ("Gather", 1)),  # along the reduced axis / along each embedding row
    )
    with np.errstate(divide="ignore", invalid="ignore"):  # all-zero blocks have scale 0; they stay 0
        quantizer.process()
    return quantizer.model.model


def _matmul_block(model: onnx.ModelProto) -> int:
    """`MATMUL_BLOCK`, or the largest power of two within the shortest MatMul weight's input dimension,
    so a small model's weights are not padded out to a block they cannot fill."""
    weights = {initializer.name: initializer for initializer in model.graph.initializer}
    depths = [
        weights[node.input[1]].dims[0]
        for node in model.graph.node
        if node.op_type == "MatMul" and node.input[1] in weights and len(weights[node.input[1]].dims) == 2
    ]
    shortest = min(depths, default=MATMUL_BLOCK)
    return max(16, min(MATMUL_BLOCK, 1 << (shortest.bit_length() - 1)))
