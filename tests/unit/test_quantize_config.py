"""Flag combinations that cannot work are refused before any model is loaded."""

from __future__ import annotations

import pytest

from embedops.errors import ConfigError
from embedops.quantize import QuantizeConfig
from embedops.quantize.kernels import cpu_class, cpu_flags, detect_kernel, serving_warning, width_multiple


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


@pytest.mark.parametrize(
    ("machine", "flags", "expected"),
    [
        ("x86_64", {"avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_tile"}, "amx"),
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, "avx512_vnni"),
        ("x86_64", {"avx2", "avx_vnni"}, "avx_vnni"),
        ("x86_64", {"avx2", "avx512f"}, "avx512"),
        ("x86_64", {"avx2", "fma"}, "avx2"),
        ("x86_64", {"sse4_2"}, "other"),
        ("aarch64", {"asimd"}, "arm64"),
    ],
)
def test_cpu_class_names_the_fastest_int8_instructions(machine: str, flags: set[str], expected: str) -> None:
    assert cpu_class(machine, flags) == expected


AVX2 = {"avx2", "fma"}
VNNI = {"avx2", "avx512f", "avx512_vnni"}


def test_serving_warning_names_a_cpu_class_mismatch() -> None:
    rowwise = {"method": "onnx-rowwise-int8", "cpu": {"class": "avx512_vnni"}}
    assert serving_warning(rowwise, "x86_64", VNNI) is None
    moved = serving_warning(rowwise, "x86_64", AVX2)
    assert moved is not None and "class avx512_vnni," in moved and "class avx2" in moved and "slower" in moved
    on_arm = serving_warning(rowwise, "aarch64", set())
    assert on_arm is not None and "class arm64" in on_arm and "slower" not in on_arm  # ARM has its own dot products
    signed = {"method": "onnx-dynamic-int8", "kernel": "avx512_vnni", "cpu": {"class": "avx512_vnni"}}
    saturates = serving_warning(signed, "x86_64", AVX2)
    assert saturates is not None and "saturate" in saturates and "--target-cpu avx2" in saturates
    assert serving_warning({"method": "onnx-dynamic-int8", "kernel": "avx2"}, "x86_64", AVX2) is None  # unrecorded cpu
    assert serving_warning({"method": "onnx-weight-only-int4-embeddings-int8-matmuls"}, "x86_64", AVX2) is None
    assert serving_warning(None, "x86_64", AVX2) is None


def test_only_arm_batches_are_padded_to_a_multiple_of_four_tokens() -> None:
    assert width_multiple("aarch64") == width_multiple("arm64") == 4
    assert width_multiple("x86_64") == 1
