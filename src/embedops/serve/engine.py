"""Turn token ids into embeddings with a loaded artifact, on torch or ONNX Runtime.

Tokenization and inference are split so the batcher can count tokens per input before choosing a
batch (token-budget batching) and pad each batch only to its own longest input. Both methods are
blocking and thread-safe; the batcher decides which run off the event loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from embedops.errors import ArtifactError, ConfigError, RequestError
from embedops.models import ModelRef, load, read_json
from embedops.quantize.kernels import cpu_class, serving_warning, width_multiple
from embedops.serve.lanes import CpuLanes
from embedops.serve.onnx_forward import OnnxForward
from embedops.serve.tokenizer import ServingTokenizer

logger = logging.getLogger(__name__)
_TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # names in torch


class Forward(Protocol):
    """Padded ids and their attention mask → embeddings; `pooled` marks the positions pooled where
    they are not all the attended ones (a prompt left out of pooling)."""

    def __call__(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, *, pooled: np.ndarray | None = None
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class EngineInfo:
    """What /info reports about the model being served."""

    model: str
    dim: int
    device: str
    backend: str
    dtype: str
    quantization: dict[str, Any] | None
    max_seq_length: int
    model_normalizes: bool
    vocab_size: int
    # How a batch becomes vectors: "onnxruntime+numpy" or "sentence-transformers".
    forward: str
    # This machine's int8 class (amx, avx512_vnni, avx2, arm64, ...), to hold against quantization["cpu"].
    cpu: str

    @property
    def batch_invariant(self) -> bool:
        """Whether a text gets the same vector alone and in any batch: all but the dynamic int8 graph,
        which scales activations per batch (artifacts from before the flag was recorded included)."""
        quantization = self.quantization or {}
        return bool(quantization.get("batch_invariant", quantization.get("method") != "onnx-dynamic-int8"))


class Engine:
    """A model loaded once for serving: `tokenize` then `embed` batches of token ids.

    ONNX artifacts whose chain is session → pooling → normalize are opened from their files (no
    torch, no sentence-transformers), in `lanes` where given (serve/lanes.py: the sessions, their
    threads, and how many batches run at once); everything else is loaded as a SentenceTransformer.
    """

    def __init__(
        self,
        ref: ModelRef,
        *,
        device: str | None = None,
        dtype: str = "auto",
        lanes: CpuLanes | None = None,
    ) -> None:
        self.ref = ref
        manifest = ref.manifest
        backend = manifest.backend
        resolved_dtype = manifest.dtype if dtype == "auto" else dtype
        if backend == "torch" and resolved_dtype not in _TORCH_DTYPES:
            raise ConfigError(f"dtype {resolved_dtype!r} cannot run on the torch backend")
        if backend != "torch" and dtype != "auto":
            raise ConfigError(f"--dtype applies to torch models; {ref.path} is an {backend} artifact")
        self.model: Any = None  # the SentenceTransformer, when one was loaded
        self._forward: Forward
        onnx_cpu = backend == "onnx" and device in (None, "cpu")
        lean = _open_onnx(ref, lanes) if onnx_cpu else None
        # The layout of the ONNX Runtime sessions opened here (None: not opened for lanes).
        self.lanes = lanes if lean is not None else None
        if lean is not None:
            forward, self.tokenizer, self.prompts, default_prompt, max_seq_length, normalizes = lean
            self._forward = forward
            self.pools_prompt = forward.pools_prompt
            device_name = "cpu"
        else:
            self.model = load(ref, device=device)
            self.model.eval()
            if backend == "torch" and resolved_dtype != "fp32":
                import torch

                self.model.to(getattr(torch, _TORCH_DTYPES[resolved_dtype]))
            onnx = OnnxForward.from_model(self.model) if backend == "onnx" else None
            self._forward = onnx or _TorchForward(self.model)
            lowercase = bool(getattr(self.model[0], "do_lower_case", False))
            self.tokenizer = ServingTokenizer.from_transformers(self.model.tokenizer, lowercase=lowercase)
            self.prompts = dict(self.model.prompts or {})
            default_prompt = self.model.default_prompt_name
            max_seq_length = self.model.max_seq_length
            normalizes = any(type(module).__name__ == "Normalize" for module in self.model)
            self.pools_prompt = all(getattr(module, "include_prompt", True) for module in self.model)
            device_name = str(self.model.device)
        if default_prompt:
            logger.warning(
                "%s sets default_prompt_name %r; as in text-embeddings-inference, a prompt goes before texts only "
                "when a request names one (prompt_name)",
                ref.name,
                default_prompt,
            )
        window = int(max_seq_length or manifest.max_seq_length or 512)
        # ONNX batches are padded to a multiple of this many tokens (never past the window), so that on
        # every CPU a text's vector is the same alone and in any batch (kernels.width_multiple).
        self.pad_multiple = width_multiple() if isinstance(self._forward, OnnxForward) else 1
        self._window = window
        self._prompt_tokens = {prompt: self._count_prompt_tokens(prompt) for prompt in self.prompts.values()}
        self.info = EngineInfo(
            model=ref.name,
            dim=self._measured_width(),
            device=device_name,
            backend=backend,
            dtype=resolved_dtype,
            quantization=manifest.quantization,
            max_seq_length=window,
            model_normalizes=normalizes,
            vocab_size=self.tokenizer.vocab_size,
            forward="onnxruntime+numpy" if isinstance(self._forward, OnnxForward) else "sentence-transformers",
            cpu=cpu_class(),
        )
        warning = serving_warning(manifest.quantization) if device_name == "cpu" else None
        if warning:
            logger.warning("%s: %s", ref.name, warning)

    @property
    def concurrent_batches(self) -> int:
        """Batches this engine runs at once to use its cores: one per lane, else one (torch already spreads
        one batch over every core, and a GPU runs one batch at a time)."""
        return self.lanes.lanes if self.lanes is not None else 1

    def _measured_width(self) -> int:
        """The width the model really produces (one forward pass), held against what its manifest says:
        a request must never meet vectors wider or narrower than /info promised."""
        output = self.embed([self.tokenizer.wrap([])])
        if output.ndim != 2 or output.shape[0] != 1:
            raise ArtifactError(f"{self.ref.path}: the model returns an array of shape {output.shape}, not one vector")
        width, recorded = int(output.shape[1]), self.ref.manifest.dim
        if self.ref.source == "artifact" and recorded is not None and recorded != width:
            raise ArtifactError(
                f"{self.ref.path}: the model produces {width}-dimensional vectors but its manifest records "
                f"dim {recorded}; rebuild the artifact"
            )
        return width

    def check_output(self, output: np.ndarray, inputs: int) -> None:
        """Refuse a batch result that is not one finite vector of the served width per input."""
        expected = (inputs, self.info.dim)
        if output.shape != expected:
            raise ArtifactError(f"the model returned shape {output.shape} for {inputs} input(s), expected {expected}")
        if not np.isfinite(output).all():
            raise ArtifactError("the model returned non-finite values (NaN or infinity)")

    def prompt_tokens(self, prompt: str) -> int:
        """How many leading positions of an input that begins with `prompt` pooling leaves out: the
        prompt's tokens and the special tokens before them where the model's Pooling excludes prompts
        (sentence-transformers' include_prompt=False, as INSTRUCTOR models set it), else none."""
        found = self._prompt_tokens.get(prompt)
        return self._count_prompt_tokens(prompt) if found is None else found

    def _count_prompt_tokens(self, prompt: str) -> int:
        """As sentence-transformers counts them: the prompt stripped (as it strips every text) and
        tokenized on its own with special tokens, less the closing special token."""
        if self.pools_prompt or not prompt:
            return 0
        wrapped = self.tokenizer.wrap(self.tokenizer.content_ids([prompt.strip()])[0])
        return len(wrapped) - (1 if self.tokenizer.suffix else 0)

    def padded_width(self, longest: int) -> int:
        """The width a batch whose longest input has `longest` tokens is padded to."""
        rounded = -(-longest // self.pad_multiple) * self.pad_multiple
        return min(rounded, max(longest, self._window))

    def tokenize(self, texts: list[str], *, truncate: bool, left: bool = False, prompt: str = "") -> list[list[int]]:
        """Token ids of `prompt` + each text with special tokens, cut to the model's window (or refused with
        413 when too long). A cut from the left keeps the prompt: it takes the text's start, not the prompt."""
        content = self.tokenizer.content_ids([prompt + text for text in texts] if prompt else texts)
        head = self.tokenizer.content_ids([prompt])[0] if prompt and left else []
        return [
            self.with_special_tokens(ids, truncate=truncate, left=left, index=i, keep=_common_prefix(ids, head))
            for i, ids in enumerate(content)
        ]

    def with_special_tokens(
        self,
        ids: list[int],
        *,
        truncate: bool,
        left: bool = False,
        index: int = 0,
        window: int | None = None,
        keep: int = 0,
    ) -> list[int]:
        """Wrap content ids for the model, keeping the side of a long input that the caller asked for.

        `window` (at most the model's) cuts inputs shorter than the model would; a cut from the left keeps
        the first `keep` ids (a prompt's) and takes the rest from the end.
        """
        window = min(window or self.info.max_seq_length, self.info.max_seq_length)
        room = window - self.tokenizer.specials
        if len(ids) > room:
            if not truncate:
                raise _too_long(index, len(ids) + self.tokenizer.specials, window)
            keep = min(keep, room)
            ids = ids[:keep] + ids[len(ids) - (room - keep) :] if left else ids[:room]
        return self.tokenizer.wrap(ids)

    def check_vocabulary(self, inputs: list[list[int]], *, param: str) -> None:
        """Refuse token ids outside the model's vocabulary (422), naming the request field `param`."""
        vocab = self.info.vocab_size
        for index, ids in enumerate(inputs):
            if any(token < 0 or token >= vocab for token in ids):
                raise RequestError(
                    f"{param} {index} has token ids outside the model's vocabulary [0, {vocab})", param=param
                )

    def prepare_ids(self, inputs: list[list[int]], *, truncate: bool) -> list[list[int]]:
        """Token ids a client sent instead of text: checked against the vocabulary and cut to the window
        (a closing special token the client sent, [SEP] or </s>, stays last)."""
        self.check_vocabulary(inputs, param="input")
        window = self.info.max_seq_length
        suffix = list(self.tokenizer.suffix)
        prepared = []
        for index, ids in enumerate(inputs):
            if len(ids) > window:
                if not truncate:
                    raise _too_long(index, len(ids), window)
                closed = bool(suffix) and ids[-len(suffix) :] == suffix
                ids = ids[: window - len(suffix)] + suffix if closed else ids[:window]
            prepared.append(ids)
        return prepared

    def embed(
        self, batch: list[list[int]], *, alone: bool = False, prompt_tokens: int | Sequence[int] = 0
    ) -> np.ndarray:
        """Embeddings (float32, one row per input) of a batch of token-id lists, padded to `padded_width`.

        `alone`: no other batch runs or waits, so an ONNX forward may spread it over every core.
        `prompt_tokens`: leading positions of each input (or of every input) left out of pooling
        (`prompt_tokens(prompt)`); rows of different requests in one batch may differ.
        """
        # Padded by hand: `tokenizer.pad` re-walks Python dicts per row and warns on fast tokenizers.
        width = self.padded_width(max(len(ids) for ids in batch))
        input_ids = np.full((len(batch), width), self.tokenizer.pad_id, dtype=np.int64)
        attention = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            span = slice(width - len(ids), width) if self.tokenizer.pad_left else slice(0, len(ids))
            input_ids[row, span] = ids
            attention[row, span] = 1
        pooled = _without_prompts(attention, [len(ids) for ids in batch], prompt_tokens, self.tokenizer.pad_left)
        if alone and isinstance(self._forward, OnnxForward):
            return self._forward(input_ids, attention, pooled=pooled, alone=True)
        return self._forward(input_ids, attention, pooled=pooled)

    def release_memory(self) -> None:
        """Give memory held for large batches back to the system (an idle server's RSS returns to its
        level before them): ONNX Runtime's arena where the forward has one, and the C heap's free pages."""
        if isinstance(self._forward, OnnxForward):
            ids = np.array([self.tokenizer.wrap([])], dtype=np.int64)
            self._forward(ids, np.ones_like(ids), release_memory=True)
        _trim_malloc()

    def finish(self, vectors: np.ndarray, *, normalize: bool, dimensions: int | None) -> np.ndarray:
        """Matryoshka truncation to `dimensions`, then unit length where asked or where the model's own
        vectors had it (a cut unit vector is no longer one)."""
        if dimensions is not None:
            vectors = np.ascontiguousarray(vectors[:, :dimensions])
        wants_unit = normalize or self.info.model_normalizes
        is_unit = self.info.model_normalizes and dimensions is None
        if wants_unit and not is_unit:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors

    def warmup(self) -> None:
        """Run the shapes a first request will hit, so lazy initialisation is not paid by a client."""
        for texts in (["warm up"], ["warm up the engine with a longer sentence"] * 8):
            self.check_output(self.embed(self.tokenize(texts, truncate=True)), len(texts))


def _without_prompts(
    attention: np.ndarray, lengths: list[int], prompt_tokens: int | Sequence[int], pad_left: bool
) -> np.ndarray | None:
    """The attention mask with each row's first `prompt_tokens` positions cleared (None where there are
    none), counted from the row's first token whichever side it was padded on."""
    skips = [prompt_tokens] * len(lengths) if isinstance(prompt_tokens, int) else list(prompt_tokens)
    if not any(skips):
        return None
    pooled = attention.copy()
    width = attention.shape[1]
    for row, (length, skip) in enumerate(zip(lengths, skips, strict=True)):
        start = width - length if pad_left else 0
        pooled[row, start : start + skip] = 0
    return pooled


def _common_prefix(ids: list[int], head: list[int]) -> int:
    """How many of `head`'s ids begin `ids`: all of a prompt's where its last token does not merge with
    the text's first (a BPE tokenizer may tokenize the two together differently)."""
    count = 0
    for first, second in zip(ids, head, strict=False):
        if first != second:
            break
        count += 1
    return count


def _trim_malloc() -> None:
    """Return the C heap's free pages to the system (glibc only): large requests' bodies, token ids and
    vectors are freed into it, and without a trim an idle server's RSS stays at its peak."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _too_long(index: int, tokens: int, window: int) -> RequestError:
    """The one refusal of an input longer than the token window, for texts and token ids alike."""
    return RequestError(
        f"input {index} has {tokens} tokens, more than the model's {window}; shorten it or send truncate=true",
        status=413,
        code="input_too_long",
        param="input",
    )


class _TorchForward:
    """Padded ids → embeddings through a loaded SentenceTransformer's module chain."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.token_types = "token_type_ids" in model.tokenizer.model_input_names

    def __call__(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, *, pooled: np.ndarray | None = None
    ) -> np.ndarray:
        import torch

        features = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
        if self.token_types:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        features = {k: v.to(self.model.device) for k, v in features.items()}
        with torch.inference_mode():
            if pooled is None:
                output = self.model.forward(features)["sentence_embedding"]
            else:  # the modules after the transformer see only the pooled positions (a mask per row,
                # where sentence-transformers' prompt_length is one count for a whole batch)
                features = self.model[0](features)
                features["attention_mask"] = torch.from_numpy(pooled).to(self.model.device)
                for module in list(self.model)[1:]:
                    features = module(features)
                output = features["sentence_embedding"]
        return output.float().cpu().numpy()


def _open_onnx(
    ref: ModelRef, lanes: CpuLanes | None
) -> tuple[OnnxForward, ServingTokenizer, dict[str, str], str | None, int | None, bool] | None:
    """An ONNX artifact opened from its files: forward, tokenizer, prompts, default prompt name, window,
    whether it normalizes."""
    directory, file = ref.path, ref.manifest.file
    if not file or not (directory / file).is_file() or not (directory / "modules.json").is_file():
        return None  # `load` reports what is missing
    if lanes is None:  # one session on ONNX Runtime's default threads
        forward = OnnxForward.from_directory(directory, file)
    else:
        forward = OnnxForward.from_directory(
            directory, file, threads=lanes.threads, copies=lanes.sessions, wide_threads=lanes.wide_threads
        )
    if forward is None:
        return None
    st_config = read_json(directory / "sentence_bert_config.json")
    tokenizer = ServingTokenizer.from_files(directory, lowercase=bool(st_config.get("do_lower_case", False)))
    if tokenizer is None:
        return None
    prompts_config = read_json(directory / "config_sentence_transformers.json")
    prompts = dict(prompts_config.get("prompts") or {})
    default_prompt = prompts_config.get("default_prompt_name")
    return forward, tokenizer, prompts, default_prompt, st_config.get("max_seq_length"), forward.normalize
