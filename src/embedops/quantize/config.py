"""`QuantizeConfig`: what `embedops quantize` was asked to do, checked before any model is loaded."""

from __future__ import annotations

from dataclasses import dataclass

from embedops.configs import FromFlags
from embedops.errors import ConfigError

DTYPES = ("int8", "int4", "fp16", "bf16")
BACKENDS = ("auto", "onnx", "torch", "bnb")
TARGET_CPUS = ("auto", "avx512_vnni", "avx512", "avx2", "arm64")
# rowwise: batch-invariant, the default; dynamic: activations scaled per batch (see quantize/onnx_int.py).
INT8_SCHEMES = ("rowwise", "dynamic")
# The backend each dtype gets with --backend auto: integer types run on CPUs through ONNX Runtime,
# half precision is for GPU serving with torch.
DEFAULT_BACKEND = {"int8": "onnx", "int4": "onnx", "fp16": "torch", "bf16": "torch"}
SUPPORTED = {
    ("int8", "onnx"),
    ("int4", "onnx"),
    ("fp16", "torch"),
    ("bf16", "torch"),
    ("int8", "bnb"),
    ("int4", "bnb"),
}
_ALTERNATIVES = {
    "int8": "--backend onnx (CPU) or --backend bnb (CUDA)",
    "int4": "--backend onnx (CPU) or --backend bnb (CUDA)",
    "fp16": "--backend torch",
    "bf16": "--backend torch",
}


@dataclass(frozen=True)
class QuantizeConfig(FromFlags):
    """One quantization run. `max_drift` is the allowed 1 - mean cosine; None measures without a gate.
    `embedops quantize` fills it with `from_flags`."""

    model_path: str
    output: str
    dtype: str = "int8"
    backend: str = "auto"
    target_cpu: str = "auto"
    int8_scheme: str = "rowwise"
    calibration_data: str | None = None
    check_data: str | None = None
    check_samples: int = 500
    max_drift: float | None = None
    block_size: int = 32
    force: bool = False
    verbose: bool = False  # ONNX Runtime's own log lines (quantize.steps)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype {self.dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend {self.backend!r} is not supported; choose one of {', '.join(BACKENDS)}")
        if (self.dtype, self.resolved_backend) not in SUPPORTED:
            raise ConfigError(
                f"--dtype {self.dtype} cannot be produced with --backend {self.backend}; "
                f"use {_ALTERNATIVES[self.dtype]}"
            )
        if self.target_cpu not in TARGET_CPUS:
            raise ConfigError(f"--target-cpu {self.target_cpu!r} is not one of {', '.join(TARGET_CPUS)}")
        if self.int8_scheme not in INT8_SCHEMES:
            raise ConfigError(f"--int8-scheme {self.int8_scheme!r} is not one of {', '.join(INT8_SCHEMES)}")
        if self.max_drift is not None and not 0 <= self.max_drift <= 1:
            raise ConfigError(f"--max-drift {self.max_drift} must be between 0 and 1 (it is 1 - mean cosine)")
        if self.check_samples < 2:
            raise ConfigError(f"--check-samples {self.check_samples} must be at least 2")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ConfigError(f"--block-size {self.block_size} must be a power of two, at least 16")

    @property
    def resolved_backend(self) -> str:
        return DEFAULT_BACKEND[self.dtype] if self.backend == "auto" else self.backend
