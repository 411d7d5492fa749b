"""int8 artifacts on the CPU classes this machine is not: batch invariance and quality under QEMU.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/emulated_cpus.py [--texts 100] [--rounds 2] [--cpus ...]

The CPU an int8 artifact is served on picks ONNX Runtime's kernels (x86 AVX2 without VNNI, ARM NEON,
NEON dot products, SVE and i8mm), and each kernel family rounds its float parts in its own order.
This runs the server's engine (`Engine`, one lane) in a real ONNX Runtime built for that CPU, under
QEMU's user-mode emulation of it (`qemu-x86_64 -cpu EPYC-Rome`; `qemu-aarch64 -cpu cortex-a72`,
`neoverse-n1`, and `max` with 256-bit SVE for a Neoverse-V1), on the artifact `embedops quantize
--target-cpu` builds for it. Per CPU the table gives: the lowest cosine between `--texts` WikiQA texts
embedded alone and inside `--rounds` shuffles into batches of 8 and of 32; the drift of those vectors
from fp32 (the source model through sentence-transformers on this machine); their agreement with the
same artifact run on this machine; and whether the server warns about the artifact there. QEMU runs
the kernels' own instructions with IEEE-exact arithmetic (only estimate instructions such as rcpps
may round otherwise than a given chip), 50-300x slower, so no speed is reported.

Needs root (each emulated process is shown its CPU's /proc/cpuinfo through a private mount), QEMU
7.2 or later in user mode (`apt-get install qemu-user`; 7.2 is the first to emulate AVX2) and, for ARM,
an aarch64 Python with the serving wheels: `--root` is filled on first use from Debian 12's arm64
packages (the host must be Debian 12; this adds arm64 to dpkg's architectures, for good) and PyPI's
aarch64 wheels, about 150 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]


def _cpuinfo(cores: int, **fields: str) -> str:
    return "".join(
        f"processor\t: {core}\n" + "".join(f"{k}\t: {v}\n" for k, v in fields.items()) + "\n" for core in range(cores)
    )


# The /proc/cpuinfo each emulated process is shown (QEMU user mode passes the host's through, and on
# ARM ONNX Runtime picks its kernels from the features listed there; embedops reads the CPU class there).
_ARM = {"CPU implementer": "0x41", "CPU architecture": "8"}
_NEON = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_DOTPROD = f"{_NEON} atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp ssbs"
_SVE_I8MM = f"{_DOTPROD} jscvt fcma sha3 sm3 sm4 sha512 sve asimdfhm dit uscat ilrcpc flagm sb paca pacg dcpodp"
_SVE_I8MM += " svei8mm svebf16 i8mm bf16 rng"
CPUINFO = {
    "EPYC-Rome": _cpuinfo(
        2,
        vendor_id="AuthenticAMD",
        **{"model name": "AMD EPYC-Rome Processor (QEMU)"},
        flags="fpu mmx sse sse2 ssse3 sse4_1 sse4_2 popcnt avx f16c fma bmi1 bmi2 avx2",
    ),
    "cortex-a72": _cpuinfo(2, Features=_NEON, **_ARM, **{"CPU part": "0xd08"}),
    "neoverse-n1": _cpuinfo(2, Features=_DOTPROD, **_ARM, **{"CPU part": "0xd0c"}),
    # Graviton3's Neoverse-V1: 256-bit SVE, i8mm and bf16 (QEMU's max CPU with that vector length).
    "max,sve-default-vector-length=32": _cpuinfo(2, Features=_SVE_I8MM, **_ARM, **{"CPU part": "0xd40"}),
}
# label: (emulator, QEMU CPU, the artifact's --target-cpu); "-unpadded": batches padded only to their
# longest input, as before the engine rounded ARM widths up (kernels.width_multiple).
CPUS = {
    "x86-avx2": ("qemu-x86_64", "EPYC-Rome", "avx2"),
    "x86-avx2-signed": ("qemu-x86_64", "EPYC-Rome", "avx512_vnni"),
    "arm-cortex-a72": ("qemu-aarch64", "cortex-a72", "arm64"),
    "arm-neoverse-n1": ("qemu-aarch64", "neoverse-n1", "arm64"),
    "arm-neoverse-n1-unpadded": ("qemu-aarch64", "neoverse-n1", "arm64"),
    "arm-neoverse-v1": ("qemu-aarch64", "max,sve-default-vector-length=32", "arm64"),
    "arm-neoverse-v1-unpadded": ("qemu-aarch64", "max,sve-default-vector-length=32", "arm64"),
}
ARM_DEBS = [
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "libssl3",
    "libgcc-s1",
    "libstdc++6",
    "libbz2-1.0",
    "liblzma5",
    "libsqlite3-0",
    "libuuid1",
    "libncursesw6",
    "libtinfo6",
    "libreadline8",
    "libcrypt1",
    "libnsl2",
    "libtirpc3",
    "libgomp1",
    "libgssapi-krb5-2",
    "libkrb5-3",
    "libk5crypto3",
    "libkrb5support0",
    "libcom-err2",
    "libkeyutils1",
]
# What an ONNX artifact's server needs (pyproject's base and `onnx` extra), for aarch64.
ARM_WHEELS = ("tokenizers==0.21.4", "huggingface-hub==0.36.2", "safetensors==0.8.0", "numpy==2.4.6", "tqdm==4.70.1")
ARM_WHEELS += ("onnx==1.23.2", "onnxruntime==1.32.0")


def worker(artifact: str, texts_file: str, out: str, rounds: int, unpadded: bool = False) -> None:
    """Inside the emulator: vectors alone, and the lowest cosine of each text in shuffled batches."""
    from int8_bench import batched_cosines  # bench/ is on sys.path when this script runs

    from embedops.models import resolve
    from embedops.quantize.kernels import serving_warning
    from embedops.serve.engine import Engine
    from embedops.serve.lanes import CpuLanes

    chosen = json.loads(Path(texts_file).read_text())
    engine = Engine(resolve(artifact), lanes=CpuLanes(lanes=1, threads=1, cores=1, wide=False))
    if unpadded:
        engine.pad_multiple = 1

    def embed(batch: list[str]) -> np.ndarray:
        return engine.finish(engine.embed(engine.tokenize(batch, truncate=True)), normalize=True, dimensions=None)

    alone = np.concatenate([embed([text]) for text in chosen])
    lowest = float(batched_cosines(embed, chosen, alone, rounds).min()) if rounds else None
    np.save(out, alone)
    warning = serving_warning(engine.ref.manifest.quantization)
    Path(out).with_suffix(".json").write_text(
        json.dumps({"lowest": lowest, "cpu": engine.info.cpu, "warning": warning})
    )


def arm_root(root: Path) -> Path:
    """An aarch64 Python 3.11 with the serving wheels under `root` (made once)."""
    python = root / "sysroot" / "usr" / "bin" / "python3.11"
    if (root / "ready").is_file():
        return python
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    foreign = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout
    if "arm64" not in foreign.split():
        subprocess.run(["dpkg", "--add-architecture", "arm64"], check=True)
        subprocess.run(["apt-get", "update", "-q"], check=True)
    subprocess.run(["apt-get", "download", *(f"{name}:arm64" for name in ARM_DEBS)], cwd=debs, check=True)
    for deb in debs.glob("*.deb"):
        subprocess.run(["dpkg", "-x", str(deb), str(root / "sysroot")], check=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--target",
            str(root / "site"),
            "--only-binary=:all:",
            "--no-warn-conflicts",
        ]
        + ["--python-version", "3.11", "--implementation", "cp"]
        + [
            arg
            for tag in ("manylinux2014", "manylinux_2_17", "manylinux_2_27", "manylinux_2_28")
            for arg in ("--platform", f"{tag}_aarch64")
        ]
        + list(ARM_WHEELS),
        check=True,
    )
    (root / "ready").touch()
    return python


def emulate(label: str, artifact: Path, texts_file: Path, out: Path, rounds: int, root: Path) -> dict:
    emulator, cpu, _ = CPUS[label]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    if emulator == "qemu-aarch64":
        env["PYTHONPATH"] = f"{root / 'site'}:{ROOT / 'src'}"
        inner = [emulator, "-cpu", cpu, "-L", str(root / "sysroot"), str(arm_root(root))]
    else:
        inner = [emulator, "-cpu", cpu, sys.executable]
    cpuinfo = out.with_suffix(".cpuinfo")
    cpuinfo.write_text(CPUINFO[cpu])
    # A private mount namespace, so that only the emulated process sees the emulated CPU's /proc/cpuinfo.
    mount = f'mount --bind {cpuinfo} /proc/cpuinfo && exec "$@"'
    command = ["unshare", "-m", "sh", "-c", mount, "sh", *inner]
    command += [__file__, "--worker", str(artifact), str(texts_file), str(out), str(rounds)]
    command += ["unpadded"] if label.endswith("-unpadded") else []
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(line for line in done.stderr.splitlines() if "TCG doesn't support" not in line)[-2000:]
        raise SystemExit(f"{label}: the emulated run failed ({done.returncode}):\n{tail}")
    result = json.loads(out.with_suffix(".json").read_text())
    result["minutes"] = (time.perf_counter() - started) / 60
    return result


def native(artifact: Path, chosen: list[str]) -> np.ndarray:
    from embedops.models import resolve
    from embedops.serve.engine import Engine

    engine = Engine(resolve(str(artifact)))
    return np.concatenate(
        [
            engine.finish(engine.embed(engine.tokenize([t], truncate=True)), normalize=True, dimensions=None)
            for t in chosen
        ]
    )


def main() -> None:
    from int8_bench import SIZES, invariance_texts
    from serve_bench import cpu_line

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="the fp32 source (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--texts", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--cpus", nargs="*", default=[label for label in CPUS if "unpadded" not in label], choices=list(CPUS)
    )
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/emulated-cpus"))
    parser.add_argument("--root", type=Path, default=Path("/tmp/emulated-cpus/arm64"), help="the aarch64 Python")
    args = parser.parse_args()
    for emulator in {CPUS[label][0] for label in args.cpus}:
        if shutil.which(emulator) is None:
            raise SystemExit(f"{emulator} not found: apt-get install qemu-user")
        version = subprocess.run([emulator, "--version"], capture_output=True, text=True).stdout.split()[2]
        if tuple(int(part) for part in version.split(".")[:2]) < (7, 2):
            raise SystemExit(f"{emulator} {version} does not emulate AVX2; QEMU 7.2 or later is needed")

    from embedops.models import load, resolve
    from embedops.quantize import QuantizeConfig, quantize

    source = resolve(args.model) if args.model else resolve("sentence-transformers/all-MiniLM-L6-v2")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    chosen = invariance_texts(args.texts)
    texts_file = args.out_dir / "texts.json"
    texts_file.write_text(json.dumps(chosen))
    fp32 = load(source, device="cpu").encode(chosen, batch_size=32, normalize_embeddings=True, prompt="")
    print(cpu_line())
    print(f"{args.texts} WikiQA texts; batches of {SIZES} x {args.rounds} rounds; source {source.path}")
    print(
        "| CPU (QEMU model) | artifact | class seen | lowest cosine alone vs batched | drift from fp32 "
        "(1 - mean cos) / lowest | agreement with this machine, mean / lowest | server warns | minutes |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label in args.cpus:
        _, cpu, target = CPUS[label]
        artifact = args.out_dir / f"{source.path.name}-int8-{target}"
        if not (artifact / "embedops.json").is_file():
            quantize(QuantizeConfig(model_path=str(source.path), output=str(artifact), target_cpu=target, force=True))
        out = args.out_dir / f"{label}.npy"
        result = emulate(label, artifact, texts_file, out, args.rounds, args.root)
        vectors, here = np.load(out), native(artifact, chosen)
        drift, agree = (vectors * fp32).sum(axis=1), (vectors * here).sum(axis=1)
        print(
            f"| {label} ({cpu}) | `--target-cpu {target}` | {result['cpu']} | "
            f"{'–' if result['lowest'] is None else format(result['lowest'], '.7f')} | "
            f"{1 - drift.mean():.5f} / {drift.min():.4f} | {agree.mean():.7f} / {agree.min():.7f} | "
            f"{'saturation' if 'saturate' in (result['warning'] or '') else 'class' if result['warning'] else 'no'} | "
            f"{result['minutes']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(*sys.argv[2:5], int(sys.argv[5]), unpadded=sys.argv[6:7] == ["unpadded"])
    else:
        main()
