"""int8 MatMuls whose activations are scaled per row (per token), in plain ONNX operators.

ONNX Runtime's dynamic quantization scales a MatMul's whole input tensor by one number, so a token's
int8 codes depend on every other token in the batch: a text's vector moves with its neighbours and
its padding. Here each row gets its own symmetric scale (its largest magnitude over 127), so a row is
quantized from itself alone and a text gets the same vector in any batch. The row is quantized by
QuantizeLinear along the axis of rows and the integer product runs in ONNX Runtime's
MatMulIntegerToFloat (the MLAS int8 GEMM the dynamic graph uses, AMX/VNNI where the CPU has them),
scaled per weight column inside it and per row by one Mul after it. Measured on all-MiniLM-L6-v2 on a
2-core AVX-512 VNNI/AMX Xeon (bench/RESULTS.md): a fifth of the dynamic graph's drift from fp32 (0.0014
against 0.0074), within 0.13 points of fp32 on WikiQA, climate-fever and STS-B where the dynamic graph
lost up to 0.79, and about 0.8x its speed in process (the dynamic graph's quantization of a whole
tensor is one fused kernel; a row's scale takes an Abs and a ReduceMax first).

Before that, each input channel is smoothed as in SmoothQuant (Xiao et al., 2023): divided by
s_j = sqrt(max|X_j| / max|W_j|), with the weight's row multiplied by it, which leaves the product as it
is but moves the few outlier channels of a transformer's activations into the weights, where per-column
scales absorb them. max|X_j| comes from calibration texts run through the fp32 graph. On
all-MiniLM-L6-v2 it halves the drift (0.0013 against 0.0030 unsmoothed; exponent 0.5 against 0.0021 at
0.4 and 0.0014 at 0.6, calibrated on the bundled general-domain sentences). Codes are stored offset by
128 as uint8 (zero point 128), the activation type MLAS' u8*s8 and u8*u8 kernels take.

Weights are int8 per output column; for CPUs whose u8*s8 multiply-add can saturate
(AVX2 without VNNI) they are stored as uint8 with zero point 128 instead, as the dynamic graph does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import onnx


def quantized_inputs(model: onnx.ModelProto) -> list[str]:
    """The inputs of the MatMuls that `rowwise_int8_matmuls` rewrites, whose ranges calibration measures."""
    nodes = model.graph.node
    return sorted({nodes[index].input[0] for index in _constant_matmuls(model)})


def _constant_matmuls(model: onnx.ModelProto) -> set[int]:
    """Positions of the MatMuls by a constant 2-D float weight that no other node reads (tied weights stay)."""
    from onnx import TensorProto

    weights = {initializer.name: initializer for initializer in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    return {
        index
        for index, node in enumerate(model.graph.node)
        if node.op_type == "MatMul"
        and (weight := weights.get(node.input[1])) is not None
        and weight.data_type == TensorProto.FLOAT
        and len(weight.dims) == 2
        and uses[weight.name] == 1
    }


def rowwise_int8_matmuls(
    model: onnx.ModelProto, *, signed_weights: bool, channel_max: dict[str, np.ndarray] | None = None
) -> int:
    """Rewrite every constant-weight MatMul in place; return how many were rewritten.

    `channel_max` (input name -> largest magnitude of each channel on calibration texts) turns on
    smoothing for the inputs it names. MatMuls that read the same input (a layer's query, key and value
    projections) share one smoothing and one quantization of it, and run as one integer product split
    afterwards: a third of the nodes they would take apart (each small node costs ONNX Runtime a
    dispatch, which is most of a short text's time here).
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {initializer.name: initializer for initializer in graph.initializer}
    rewrite = _constant_matmuls(model)
    readers: dict[str, list[int]] = {}  # input -> positions of the MatMuls reading it
    for index in sorted(rewrite):
        readers.setdefault(graph.node[index].input[0], []).append(index)
    constants = [
        numpy_helper.from_array(np.array(1 / 127, np.float32), "rowwise_inv127"),
        numpy_helper.from_array(np.array(1e-12, np.float32), "rowwise_tiny"),
        numpy_helper.from_array(np.array([-1], np.int64), "rowwise_vector"),
        numpy_helper.from_array(np.array(1, np.float32), "rowwise_one"),
        numpy_helper.from_array(np.array(128, np.uint8), "rowwise_zero_point"),
    ]
    nodes: list[onnx.NodeProto] = []
    for index, node in enumerate(graph.node):
        if index not in rewrite:
            nodes.append(node)
        elif index == readers[node.input[0]][0]:
            # The input's first reader: quantize the input once and run all its readers as one product.
            source = node.input[0]
            members = [graph.node[position] for position in readers[source]]
            prefix = f"rowwise{len(constants)}_"
            weights = [numpy_helper.to_array(initializers[member.input[1]]) for member in members]
            values = np.concatenate(weights, axis=1)
            smoothed = source
            if channel_max and source in channel_max:
                smoothing = _smoothing(channel_max[source], values)
                values = values * smoothing[:, None]
                smoothed = f"{prefix}smoothed"
                constants.append(numpy_helper.from_array(1 / smoothing, f"{prefix}inverse_smoothing"))
                nodes.append(helper.make_node("Mul", [source, f"{prefix}inverse_smoothing"], [smoothed]))
            codes, scale = f"{prefix}codes", f"{prefix}scale"
            width = np.array([-1, values.shape[0]], np.int64)  # every row of any rank, one per line
            constants.append(numpy_helper.from_array(width, f"{prefix}rows_shape"))
            nodes += [
                helper.make_node("Abs", [smoothed], [f"{prefix}abs"]),
                helper.make_node("ReduceMax", [f"{prefix}abs"], [f"{prefix}max"], axes=[-1], keepdims=1),
                helper.make_node("Mul", [f"{prefix}max", "rowwise_inv127"], [f"{prefix}raw_scale"]),
                helper.make_node("Max", [f"{prefix}raw_scale", "rowwise_tiny"], [scale]),  # an all-zero row
                # One QuantizeLinear per axis 0 of the rows laid flat: divide, round half to even, add the
                # zero point and saturate in one pass. Measured against the same steps as Div, Round, Add
                # and Cast nodes: 11-21 % less time for the whole model at 8 x 54 and 32 x 128 tokens.
                helper.make_node("Reshape", [smoothed, f"{prefix}rows_shape"], [f"{prefix}flat"]),
                helper.make_node("Reshape", [scale, "rowwise_vector"], [f"{prefix}flat_scale"]),
                helper.make_node("Shape", [f"{prefix}flat_scale"], [f"{prefix}count"]),
                helper.make_node("Expand", ["rowwise_zero_point", f"{prefix}count"], [f"{prefix}zero_points"]),
                helper.make_node(
                    "QuantizeLinear",
                    [f"{prefix}flat", f"{prefix}flat_scale", f"{prefix}zero_points"],
                    [f"{prefix}flat_codes"],
                    axis=0,
                ),
                helper.make_node("Shape", [smoothed], [f"{prefix}shape"]),
                helper.make_node("Reshape", [f"{prefix}flat_codes", f"{prefix}shape"], [codes]),
            ]
            column_scale = (np.maximum(np.abs(values).max(axis=0), np.float32(1e-12)) / np.float32(127)).astype(
                np.float32
            )
            columns = np.clip(np.rint(values / column_scale), -127, 127)
            product_inputs = [codes, f"{prefix}weight", "rowwise_zero_point"]
            if signed_weights:
                constants.append(numpy_helper.from_array(columns.astype(np.int8), f"{prefix}weight"))
            else:
                constants.append(numpy_helper.from_array((columns + 128).astype(np.uint8), f"{prefix}weight"))
                constants.append(
                    numpy_helper.from_array(np.full(values.shape[1], 128, np.uint8), f"{prefix}weight_zero_point")
                )
                product_inputs.append(f"{prefix}weight_zero_point")
            constants.append(numpy_helper.from_array(column_scale, f"{prefix}weight_scale"))
            product = members[0].output[0] if len(members) == 1 else f"{prefix}product"
            # The integer product, turned into floats and scaled per column in the same kernel; the row
            # scale follows. Measured against MatMulInteger, Cast and two Muls (each a pass over the
            # product): a further 7-16 % less time for the whole model at 8 x 54 and 32 x 128 tokens.
            nodes += [
                helper.make_node(
                    "MatMulIntegerToFloat",
                    [codes, f"{prefix}weight", "rowwise_one", f"{prefix}weight_scale", *product_inputs[2:]],
                    [f"{prefix}columns"],
                    domain="com.microsoft",
                ),
                helper.make_node("Mul", [f"{prefix}columns", scale], [product]),
            ]
            if len(members) > 1:  # split the joint product back into each reader's output
                widths = np.array([weight.shape[1] for weight in weights], np.int64)
                constants.append(numpy_helper.from_array(widths, f"{prefix}widths"))
                outputs = [member.output[0] for member in members]
                nodes.append(helper.make_node("Split", [product, f"{prefix}widths"], outputs, axis=-1))
            for member in members:
                graph.initializer.remove(initializers[member.input[1]])
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(constants)
    if rewrite and not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(rewrite)


def _smoothing(channel_max: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """s_j = sqrt(max|X_j| / max|W_j|) over every weight that reads the input (SmoothQuant, exponent 0.5)."""
    import numpy as np

    weight_max = np.abs(weight).max(axis=1)
    floor = np.float32(1e-5)
    return np.sqrt(np.maximum(channel_max, floor) / np.maximum(weight_max, floor)).astype(np.float32)
