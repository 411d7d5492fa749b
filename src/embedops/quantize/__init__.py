"""Quantize a model artifact: ONNX Runtime int8/int4 for CPUs, fp16/bf16 and bitsandbytes for GPUs,
with a drift check against the source that can stop the result from being published."""

from embedops.quantize.config import QuantizeConfig
from embedops.quantize.drift import DriftReport
from embedops.quantize.pipeline import QuantizeResult, quantize

__all__ = ["DriftReport", "QuantizeConfig", "QuantizeResult", "quantize"]
