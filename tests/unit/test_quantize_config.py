"""Flag combinations that cannot work are refused before any model is loaded."""

from __future__ import annotations

import pytest

from embedops.errors import ConfigError
from embedops.quantize import QuantizeConfig
from embedops.quantize.kernels import cpu_flags, detect_kernel


def config(**overrides: object) -> QuantizeConfig:
    return QuantizeConfig(**{"model_path": "m", "output": "o", **overrides})


@pytest.mark.parametrize(
    ("dtype", "backend", "expected"),
    [
        ("int8", "auto", "onnx"),
        ("int4", "auto", "onnx"),
        ("fp16", "auto", "torch"),
        ("bf16", "auto", "torch"),
        ("int8", "bnb", "bnb"),
        ("int4", "bnb", "bnb"),
    ],
)
def test_auto_backend_follows_dtype(dtype: str, backend: str, expected: str) -> None:
    assert config(dtype=dtype, backend=backend).resolved_backend == expected


@pytest.mark.parametrize(
    ("dtype", "backend", "hint"),
    [
        ("int8", "torch", "--backend onnx"),
        ("int4", "torch", "--backend bnb"),
        ("fp16", "onnx", "--backend torch"),
        ("bf16", "bnb", "--backend torch"),
    ],
)
def test_unsupported_pair_names_the_alternative(dtype: str, backend: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=hint):
        config(dtype=dtype, backend=backend)


@pytest.mark.parametrize(
    "overrides",
    [
        {"dtype": "int3"},
        {"backend": "tensorrt"},
        {"max_drift": 1.5},
        {"max_drift": -0.1},
        {"check_samples": 1},
        {"block_size": 24},
        {"target_cpu": "sparc"},
    ],
)
def test_bad_values_are_refused(overrides: dict) -> None:
    with pytest.raises(ConfigError):
        config(**overrides)


@pytest.mark.parametrize(
    ("machine", "flags", "kernel"),
    [
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, "avx512_vnni"),
        ("x86_64", {"avx2", "avx512f"}, "avx512"),
        ("x86_64", {"avx2"}, "avx2"),
        ("aarch64", set(), "arm64"),
        ("arm64", set(), "arm64"),
    ],
)
def test_kernel_follows_cpu_features(machine: str, flags: set[str], kernel: str) -> None:
    chosen = detect_kernel(machine, flags)
    assert chosen.name == kernel
    assert chosen.signed_weights is (kernel != "avx2")  # u8 weights avoid AVX2's u8*s8 saturation


def test_cpu_flags_reads_cpuinfo(tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse", "avx2", "fma"}
    assert cpu_flags(tmp_path / "absent") == set()
