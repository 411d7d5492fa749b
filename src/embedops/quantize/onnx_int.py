"""Integer quantization of an fp32 ONNX graph with ONNX Runtime's own tools.

int8: dynamic quantization (weights int8 per channel, activations quantized at run time), with the
kernel configuration of the target CPU. int4: block-wise 4-bit weight-only quantization of every
MatMul weight (MatMulNBits) and of the token-embedding table (GatherBlockQuantized).
"""

from __future__ import annotations

from pathlib import Path

from embedops.errors import MissingDependencyError
from embedops.quantize.kernels import Int8Kernel


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


def quantize_int4(source: Path, target: Path, block_size: int) -> dict[str, object]:
    """Write the 4-bit weight-only graph of `source` to `target`; return what to record in the manifest."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # accuracy_level 4: activations are quantized to int8 inside MatMulNBits, the fast CPU path.
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)),
        bits=4,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=4,
        op_types_to_quantize=("MatMul", "Gather"),
        quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    quantizer.process()
    onnx.save_model(quantizer.model.model, str(target))
    return {
        "method": "onnx-matmulnbits-int4",
        "block_size": block_size,
        "symmetric": True,
        "accuracy_level": 4,
        "ops": ["MatMul", "Gather"],
    }
