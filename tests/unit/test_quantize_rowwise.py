"""The rowwise int8 rewrite on hand-built graphs: rows quantized independently (unlike ONNX Runtime's
dynamic quantization), smoothing that moves an outlier channel into the weights, and calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from embedops.quantize.calibrate import calibration_texts, channel_maxima
from embedops.quantize.embedding_rows import int8_embedding_rows
from embedops.quantize.rowwise import quantized_inputs, rowwise_int8_matmuls

RNG = np.random.default_rng(0)
WEIGHT = RNG.normal(size=(8, 4)).astype(np.float32)


def matmul_graph() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", 4])],
        [numpy_helper.from_array(WEIGHT, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("signed_weights", [True, False])
def test_rows_are_quantized_independently(signed_weights: bool) -> None:
    model = matmul_graph()
    assert quantized_inputs(model) == ["x"]
    assert rowwise_int8_matmuls(model, signed_weights=signed_weights) == 1
    assert {node.op_type for node in model.graph.node} >= {"MatMulIntegerToFloat", "QuantizeLinear"}
    x = RNG.normal(size=(3, 8)).astype(np.float32)
    alone = run(model, x)
    beside_a_large_row = run(model, np.concatenate([x, 1000 * np.ones((1, 8), np.float32)]))
    np.testing.assert_array_equal(beside_a_large_row[:3], alone)
    np.testing.assert_allclose(alone, x @ WEIGHT, atol=0.05)


def test_dynamic_quantization_scales_per_batch(tmp_path: Path) -> None:
    """Why the rewrite exists: ONNX Runtime's dynamic graph moves the same rows beside a large one."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx.save_model(matmul_graph(), str(tmp_path / "fp32.onnx"))
    quantize_dynamic(tmp_path / "fp32.onnx", tmp_path / "dynamic.onnx", weight_type=QuantType.QInt8)
    model = onnx.load(str(tmp_path / "dynamic.onnx"))
    x = RNG.normal(size=(3, 8)).astype(np.float32)
    beside = run(model, np.concatenate([x, 1000 * np.ones((1, 8), np.float32)]))
    assert np.abs(beside[:3] - run(model, x)).max() > 0.05


def test_smoothing_moves_an_outlier_channel_into_the_weights() -> None:
    x = RNG.normal(size=(64, 8)).astype(np.float32)
    x[:, 3] *= 60  # one channel far larger than the rest, as in transformer activations
    exact = x @ WEIGHT
    plain, smoothed = matmul_graph(), matmul_graph()
    rowwise_int8_matmuls(plain, signed_weights=True)
    rowwise_int8_matmuls(smoothed, signed_weights=True, channel_max={"x": np.abs(x).max(axis=0)})
    error_plain = np.abs(run(plain, x) - exact).mean()
    error_smoothed = np.abs(run(smoothed, x) - exact).mean()
    assert error_smoothed < 0.6 * error_plain


def test_channel_maxima_follow_the_real_tokens_only() -> None:
    model = matmul_graph()

    def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
        rows = np.array([[float(len(text))] * 8 for text in texts], dtype=np.float32)
        return {"x": rows, "attention_mask": np.array([text != "padding" for text in texts])}

    maxima = channel_maxima(model, ["x"], tokenize, ["ab", "abcd", "padding", "a"], batch_size=3)
    np.testing.assert_array_equal(maxima["x"], np.full(8, 4.0, np.float32))


def test_embedding_rows_are_int8_with_one_scale_each() -> None:
    table = RNG.normal(size=(50, 6)).astype(np.float32)
    table[7] *= 100  # a row far larger than the rest keeps its own scale
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["out"], axis=0)],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 6])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert int8_embedding_rows(model) == 1
    ids = np.array([0, 7, 49], dtype=np.int64)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    found = session.run(None, {"ids": ids})[0]
    half_step = np.abs(table[ids]).max(axis=1, keepdims=True) / 127 / 2  # each row rounded on its own scale
    assert (np.abs(found - table[ids]) <= half_step * 1.0001).all()


def test_calibration_texts_come_from_the_bundled_sentences_or_a_pairs_file(tmp_path: Path) -> None:
    built_in = calibration_texts(None)
    assert len(built_in) == 512 and len(set(built_in)) == 512 and all(text.strip() for text in built_in)
    assert calibration_texts(None) == built_in  # a fixed sample
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("how do I sleep\tlie down\nhow do I eat\tuse a fork\n")
    assert sorted(calibration_texts(str(pairs))) == ["how do I eat", "how do I sleep", "lie down", "use a fork"]


def test_readers_of_one_input_share_one_product() -> None:
    """A layer's query, key and value projections read one input: one quantization, one product, a Split."""
    second = RNG.normal(size=(8, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("MatMul", ["x", "v"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", 4]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["rows", 3]),
        ],
        [numpy_helper.from_array(WEIGHT, "w"), numpy_helper.from_array(second, "v")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert rowwise_int8_matmuls(model, signed_weights=False) == 2
    kinds = [node.op_type for node in model.graph.node]
    assert kinds.count("MatMulIntegerToFloat") == 1 and kinds.count("Split") == 1 and kinds.count("Abs") == 1
    x = RNG.normal(size=(5, 8)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y, z = session.run(None, {"x": x})
    np.testing.assert_allclose(y, x @ WEIGHT, atol=0.05)
    np.testing.assert_allclose(z, x @ second, atol=0.05)
