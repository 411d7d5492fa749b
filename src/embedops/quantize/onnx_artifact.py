"""Lay out an ONNX Runtime artifact: the SentenceTransformer files plus one quantized graph, and no
torch weights (they would triple the size and nothing that loads the artifact reads them)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from embedops.quantize.calibrate import CALIBRATION_TOKENS, Tokenize
from embedops.quantize.config import QuantizeConfig
from embedops.quantize.export import export_onnx
from embedops.quantize.kernels import kernel_for
from embedops.quantize.onnx_int import quantize_int4, quantize_int8
from embedops.quantize.steps import Steps

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

_TORCH_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")


def write_onnx_artifact(
    model: SentenceTransformer, directory: Path, config: QuantizeConfig, steps: Steps
) -> tuple[str, dict]:
    """Write the artifact files into `directory`; return the graph's relative path and its quantization record."""
    model.save(str(directory), create_model_card=False)
    for pattern in _TORCH_WEIGHTS:
        for path in directory.glob(pattern):
            path.unlink()
    fp32 = directory / "onnx" / "model_fp32.onnx"
    steps.start("exporting the fp32 ONNX graph")
    export_onnx(model, fp32)
    if config.dtype == "int8":
        kernel = kernel_for(config.target_cpu)
        variant = "" if config.int8_scheme == "dynamic" else f"{config.int8_scheme}_"
        file = f"onnx/model_qint8_{variant}{kernel.name}.onnx"
        record = quantize_int8(
            fp32, directory / file, config.int8_scheme, kernel, _tokenizer(model), config.calibration_data, steps
        )
    else:
        file = f"onnx/model_q4_bs{config.block_size}.onnx"
        steps.start(f"quantizing to int4 (embedding table in 4-bit blocks of {config.block_size}, MatMuls in 8 bits)")
        record = quantize_int4(fp32, directory / file, config.block_size)
    fp32.unlink()
    return file, record


def _tokenizer(model: SentenceTransformer) -> Tokenize:
    """Texts -> the exported graph's int64 inputs, cut to the model's window (at most CALIBRATION_TOKENS:
    a channel's largest magnitude shows within the first few hundred tokens, and memory grows with them)."""
    import numpy as np

    window = min(model.max_seq_length or CALIBRATION_TOKENS, CALIBRATION_TOKENS)

    def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
        features = model.tokenizer(texts, padding=True, truncation=True, max_length=window, return_tensors="np")
        feed = {name: np.asarray(value, dtype=np.int64) for name, value in features.items()}
        feed.setdefault("token_type_ids", np.zeros_like(feed["input_ids"]))
        return feed

    return tokenize
