"""Which int8 kernels a CPU has, recorded when an artifact is quantized and checked when it is served.

An int8 graph bakes a kernel configuration in. The choices mirror optimum's `AutoQuantizationConfig`
presets (per-channel, symmetric weights): on AVX2 without VNNI the u8*s8 multiply-add can saturate,
so weights are stored unsigned there; with VNNI, AVX-512 or on ARM64 signed weights are exact and
faster. How fast a graph runs follows the CPU class (AMX and VNNI run int8 GEMMs several times faster
than AVX2), so the class it was quantized and measured on is recorded, and a server on another class
says so. Written here because optimum's ONNX tooling does not import with the pinned torch.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Int8Kernel:
    name: str
    signed_weights: bool
    reduce_range: bool = False


KERNELS = {
    "avx512_vnni": Int8Kernel("avx512_vnni", signed_weights=True),
    "avx512": Int8Kernel("avx512", signed_weights=True),
    "avx2": Int8Kernel("avx2", signed_weights=False),
    "arm64": Int8Kernel("arm64", signed_weights=True),
}

# CPU classes, fastest int8 first: the first whose flags are all present names the CPU.
_CLASSES: tuple[tuple[str, frozenset[str]], ...] = (
    ("amx", frozenset({"amx_int8", "amx_tile"})),
    ("avx512_vnni", frozenset({"avx512_vnni"})),
    ("avx_vnni", frozenset({"avx_vnni"})),
    ("avx512", frozenset({"avx512f"})),
    ("avx2", frozenset({"avx2"})),
)
_VNNI_CLASSES = {"amx", "avx512_vnni", "avx_vnni"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The instruction-set flags of this CPU (empty where /proc/cpuinfo is absent, e.g. macOS)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, as benchmark tables name it ("" where it cannot be read)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor()
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _is_arm(machine: str) -> bool:
    return machine in ("arm64", "aarch64") or machine.startswith("arm")


def cpu_class(machine: str | None = None, flags: set[str] | None = None) -> str:
    """This CPU's int8 class: amx, avx512_vnni, avx_vnni, avx512, avx2, arm64, or other."""
    machine = (machine or platform.machine()).lower()
    if _is_arm(machine):
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    return next((name for name, needed in _CLASSES if needed <= flags), "other")


def width_multiple(machine: str | None = None) -> int:
    """The multiple of tokens an ONNX Runtime batch on this CPU is padded to, for batch invariance.

    ONNX Runtime's NEON Softmax sums a row's last (width mod 4) scores outside its 4-lane accumulators,
    so on ARM a text's attention, and through the next int8 layer its vector, moved with how far its
    batch was padded: lowest cosine 0.99956 between texts alone and in batches (emulated Neoverse-N1,
    ORT 1.32), 1.0000000 with widths rounded up to a multiple of 4. x86 kernels were measured invariant
    without rounding (AVX2, AVX-512, AMX); bench/RESULTS.md has the runs.
    """
    return 4 if _is_arm((machine or platform.machine()).lower()) else 1


def detect_kernel(machine: str | None = None, flags: set[str] | None = None) -> Int8Kernel:
    """The dynamic graph's kernel configuration for the CPU this runs on."""
    found = cpu_class(machine, flags)
    if found in ("amx", "avx512_vnni"):
        return KERNELS["avx512_vnni"]
    if found in ("avx512", "arm64"):
        return KERNELS[found]
    return KERNELS["avx2"]  # AVX-VNNI without AVX-512 runs MLAS' AVX2 kernels; unsigned weights are safe there


def kernel_for(target_cpu: str) -> Int8Kernel:
    return detect_kernel() if target_cpu == "auto" else KERNELS[target_cpu]


def this_cpu() -> dict[str, str]:
    """What an artifact records of the CPU it was quantized on."""
    return {"class": cpu_class(), "model": cpu_model(), "machine": platform.machine()}


def serving_warning(
    quantization: dict[str, Any] | None, machine: str | None = None, flags: set[str] | None = None
) -> str | None:
    """Why an int8 artifact may run worse here than where it was built, or None.

    A dynamic graph with signed weights on a CPU without VNNI or AVX-512 can saturate in the u8*s8
    multiply-add (quality, not only speed); any artifact quantized on another CPU class was measured
    there, so its speed here is unknown.
    """
    if not quantization:
        return None
    here = cpu_class(machine, flags)
    kernel = quantization.get("kernel")
    if kernel in KERNELS and KERNELS[kernel].signed_weights and here in ("avx2", "other"):
        return (
            f"this int8 artifact was built for {kernel} (signed weights), and this CPU ({here}) lacks VNNI and "
            "AVX-512: its u8*s8 products can saturate; re-quantize it here or with --target-cpu avx2"
        )
    built = (quantization.get("cpu") or {}).get("class")
    if built and built != here:
        slower = built in _VNNI_CLASSES and here in ("avx512", "avx2", "other")  # x86 without VNNI
        moved = (
            f"this int8 artifact was quantized and measured on a CPU of class {built}, served on one of class {here}"
        )
        return moved + ("; without VNNI its int8 kernels run slower" if slower else "")
    return None
