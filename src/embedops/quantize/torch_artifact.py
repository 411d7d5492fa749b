"""Torch-weight artifacts: half precision (fp16/bf16) for GPU serving, and bitsandbytes 8-bit / NF4,
which only exists on CUDA."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from embedops.errors import ConfigError, MissingDependencyError
from embedops.quantize.config import QuantizeConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

HALF = {"fp16": "float16", "bf16": "bfloat16"}


def require_cuda() -> None:
    """Fail before any model is loaded when bitsandbytes cannot work here; CUDA is checked first."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "--backend bnb quantizes with bitsandbytes, which needs a CUDA GPU, and none is available here; "
            "on a CPU use --backend onnx (--dtype int8, or --dtype int4 for the smallest file)"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("bitsandbytes", "gpu") from exc


def write_half_artifact(model: SentenceTransformer, directory: Path, dtype: str) -> dict:
    """Save a half-precision copy; the fp32 model stays as it was, the reference for the drift check."""
    import torch

    half = copy.deepcopy(model).to(getattr(torch, HALF[dtype]))
    half.save(str(directory), create_model_card=False)
    return {"method": f"torch-{dtype}"}


def write_bnb_artifact(model: SentenceTransformer, directory: Path, config: QuantizeConfig) -> dict:
    """Re-load the (merged) fp32 weights through transformers' bitsandbytes integration and save them."""
    from sentence_transformers import SentenceTransformer
    from transformers import BitsAndBytesConfig

    if config.dtype == "int8":
        method, quantization = "bnb-int8", BitsAndBytesConfig(load_in_8bit=True)
    else:
        method = "bnb-nf4"
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
    source = directory / ".fp32-source"
    model.save(str(source), create_model_card=False)
    quantized = SentenceTransformer(str(source), device="cuda", model_kwargs={"quantization_config": quantization})
    quantized.save(str(directory), create_model_card=False)
    shutil.rmtree(source)
    return {"method": method}
