"""Which ONNX Runtime int8 kernel configuration fits a CPU.

The choices mirror optimum's `AutoQuantizationConfig` presets (dynamic, per-channel, symmetric
weights): on AVX2 without VNNI the u8*s8 multiply-add can saturate, so weights are stored unsigned;
with VNNI, AVX-512 or on ARM64 signed weights are exact and faster. Written here because optimum's
ONNX tooling does not import with the pinned torch.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path


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


def detect_kernel(machine: str | None = None, flags: set[str] | None = None) -> Int8Kernel:
    """The kernel configuration for the CPU this runs on."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64") or machine.startswith("arm"):
        return KERNELS["arm64"]
    flags = cpu_flags() if flags is None else flags
    if "avx512_vnni" in flags:
        return KERNELS["avx512_vnni"]
    if "avx512f" in flags:
        return KERNELS["avx512"]
    return KERNELS["avx2"]


def kernel_for(target_cpu: str) -> Int8Kernel:
    return detect_kernel() if target_cpu == "auto" else KERNELS[target_cpu]
