"""`quantize(config)`: source model -> quantized artifact, published only if the drift check allows it."""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embedops.artifact import ArtifactBuilder, Manifest, check_output_free
from embedops.data.encoding import encode
from embedops.errors import ArtifactError, GateFailedError
from embedops.models import ModelRef, load, load_merged, resolve
from embedops.quantize.config import QuantizeConfig
from embedops.quantize.drift import DriftReport, measure_drift, sample_texts
from embedops.quantize.steps import Steps, library_logs
from embedops.vectors import Int8Ranges, write_ranges

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    manifest: Manifest
    drift: DriftReport


def quantize(config: QuantizeConfig) -> QuantizeResult:
    """Quantize `config.model_path` into a new artifact at `config.output`.

    Every check that needs no model (output free, source resolvable and not already quantized, CUDA
    for bitsandbytes, the drift data readable) runs before the slow work starts.
    """
    output = Path(config.output).absolute()
    check_output_free(output, force=config.force)
    ref = resolve(config.model_path)
    if ref.manifest.kind == "quantized" or ref.manifest.backend != "torch":
        raise ArtifactError(
            f"{ref.path} is already quantized ({ref.manifest.dtype}, {ref.manifest.backend}); "
            f"quantize its full-precision parent instead ({ref.manifest.parent or 'unknown'})"
        )
    backend = config.resolved_backend
    if backend == "bnb":
        from embedops.quantize.torch_artifact import require_cuda

        require_cuda()
    if backend == "onnx" and config.dtype == "int4":
        from embedops.quantize.onnx_int import require_int4_support

        require_int4_support()
    texts, text_source = sample_texts(config.check_data, config.check_samples)
    device = "cuda" if backend == "bnb" else "cpu"
    steps = Steps.planned(config)
    steps.start(f"loading {ref.name}")
    source = load_merged(ref, device=device)
    started = time.perf_counter()
    with ArtifactBuilder(output, force=config.force) as builder, library_logs(config.verbose):
        file, record = _write(source, builder.path, config, backend, steps)
        readme = ref.path / "README.md"  # the model card carries the licence and attribution
        if readme.is_file():
            shutil.copyfile(readme, builder.path / "README.md")
        manifest = _manifest(ref, source, config, backend, file, record)
        steps.start(f"checking the drift from the source on {len(texts)} {text_source} texts")
        candidate = load(ModelRef(str(output), builder.path, "artifact", manifest))
        drift = measure_drift(source, candidate, texts, text_source)
        steps.start("measuring the ranges of the output vectors (for int8/uint8 vectors when served)")
        write_output_ranges(candidate, builder.path, texts, text_source)
        manifest.quantization = {
            **record,
            "source": ref.name,
            "drift": drift.to_dict(),
            "seconds": round(time.perf_counter() - started, 1),
        }
        if config.max_drift is not None and drift.drift > config.max_drift:
            raise GateFailedError(f"{drift.verdict(config.max_drift)}; nothing was written to {output}")
        return QuantizeResult(builder.publish(manifest), manifest, drift)


def write_output_ranges(model: SentenceTransformer, directory: Path, texts: list[str], source: str) -> None:
    """The per-dimension ranges of the artifact's own vectors on the drift texts, for servers that return
    int8 or uint8 vectors (`vectors.RANGES_FILE`, hashed with the artifact's other files)."""
    vectors = encode(model, texts, label="quantize: output ranges", batch_size=32, leave=False, prompt="")
    write_ranges(directory, Int8Ranges.of(vectors), texts=len(texts), source=source)


def _write(
    model: SentenceTransformer, directory: Path, config: QuantizeConfig, backend: str, steps: Steps
) -> tuple[str | None, dict]:
    if backend == "onnx":
        from embedops.quantize.onnx_artifact import write_onnx_artifact

        return write_onnx_artifact(model, directory, config, steps)
    if backend == "bnb":
        from embedops.quantize.torch_artifact import write_bnb_artifact

        steps.start(f"quantizing to {config.dtype} with bitsandbytes")
        return None, write_bnb_artifact(model, directory, config)
    from embedops.quantize.torch_artifact import write_half_artifact

    steps.start(f"converting the weights to {config.dtype}")
    return None, write_half_artifact(model, directory, config.dtype)


def _manifest(
    ref: ModelRef,
    model: SentenceTransformer,
    config: QuantizeConfig,
    backend: str,
    file: str | None,
    record: dict,
) -> Manifest:
    adapter = ref.manifest.adapter
    return dataclasses.replace(
        ref.manifest,
        kind="quantized",
        base_model=ref.manifest.base_model or ref.name,
        parent=ref.name,
        backend="onnx" if backend == "onnx" else "torch",
        file=file,
        dtype=config.dtype,
        dim=model.get_sentence_embedding_dimension(),
        max_seq_length=model.max_seq_length,
        adapter={**adapter, "merged": True} if adapter else None,
        quantization=record,
        eval={},
        files_sha256={},
        created=None,
    )
