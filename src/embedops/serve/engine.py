"""Turn token ids into embeddings with a loaded artifact, on torch or ONNX Runtime.

Tokenization and inference are split so the batcher can count tokens per input before choosing a
batch (token-budget batching) and pad each batch only to its own longest input. Both methods are
blocking and thread-safe; the batcher decides which run off the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from embedops.errors import ConfigError, RequestError
from embedops.models import ModelRef, load
from embedops.serve.onnx_forward import OnnxForward

_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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


class Engine:
    """A SentenceTransformer loaded once for serving: `tokenize` then `embed` batches of token ids."""

    def __init__(self, ref: ModelRef, *, device: str | None = None, dtype: str = "auto") -> None:
        self.ref = ref
        manifest = ref.manifest
        self.model = load(ref, device=device)
        self.model.eval()
        backend = manifest.backend
        resolved_dtype = manifest.dtype if dtype == "auto" else dtype
        if backend == "torch":
            if resolved_dtype not in _TORCH_DTYPES:
                raise ConfigError(f"dtype {resolved_dtype!r} cannot run on the torch backend")
            if resolved_dtype != "fp32":
                self.model.to(_TORCH_DTYPES[resolved_dtype])
        elif dtype != "auto":
            raise ConfigError(f"--dtype applies to torch models; {ref.path} is an {backend} artifact")
        # ONNX artifacts skip the torch module chain when their pooling can be done in numpy.
        self._onnx_forward = OnnxForward.from_model(self.model) if backend == "onnx" else None
        self.tokenizer = self.model.tokenizer
        self._specials = self.tokenizer.num_special_tokens_to_add(pair=False)
        self._pad_id = self.tokenizer.pad_token_id or 0
        self._pad_left = self.tokenizer.padding_side == "left"
        self._needs_token_types = "token_type_ids" in self.tokenizer.model_input_names
        self._content_ids = _content_encoder(self.tokenizer)
        self.info = EngineInfo(
            model=ref.name,
            dim=int(self.model.get_sentence_embedding_dimension() or manifest.dim or 0),
            device=str(self.model.device),
            backend=backend,
            dtype=resolved_dtype,
            quantization=manifest.quantization,
            max_seq_length=int(self.model.max_seq_length or manifest.max_seq_length or 512),
            model_normalizes=any(type(m).__name__ == "Normalize" for m in self.model),
            vocab_size=len(self.tokenizer),
            forward="sentence-transformers" if self._onnx_forward is None else "onnxruntime+numpy",
        )

    def tokenize(self, texts: list[str], *, truncate: bool, left: bool = False) -> list[list[int]]:
        """Token ids with special tokens, cut to the model's window (or refused with 413 when too long)."""
        content = self._content_ids(texts)
        return [self.with_special_tokens(ids, truncate=truncate, left=left, index=i) for i, ids in enumerate(content)]

    def with_special_tokens(self, ids: list[int], *, truncate: bool, left: bool = False, index: int = 0) -> list[int]:
        """Wrap content ids for the model, keeping the side of a long input that the caller asked for."""
        room = self.info.max_seq_length - self._specials
        if len(ids) > room:
            if not truncate:
                raise RequestError(
                    f"input {index} has {len(ids) + self._specials} tokens, more than the model's "
                    f"{self.info.max_seq_length}; shorten it or send truncate=true",
                    status=413,
                    code="input_too_long",
                    param="input",
                )
            ids = ids[-room:] if left else ids[:room]
        return self.tokenizer.build_inputs_with_special_tokens(ids)

    def embed(self, batch: list[list[int]]) -> np.ndarray:
        """Embeddings (float32, one row per input) of a batch of token-id lists, padded to its longest."""
        # Padded by hand: `tokenizer.pad` re-walks Python dicts per row and warns on fast tokenizers.
        width = max(len(ids) for ids in batch)
        input_ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        attention = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            span = slice(width - len(ids), width) if self._pad_left else slice(0, len(ids))
            input_ids[row, span] = ids
            attention[row, span] = 1
        if self._onnx_forward is not None:
            return self._onnx_forward(input_ids, attention)
        features = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention)}
        if self._needs_token_types:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        features = {k: v.to(self.model.device) for k, v in features.items()}
        with torch.inference_mode():
            output = self.model.forward(features)["sentence_embedding"]
        return output.float().cpu().numpy()

    def warmup(self) -> None:
        """Run the shapes a first request will hit, so lazy initialisation is not paid by a client."""
        for texts in (["warm up"], ["warm up the engine with a longer sentence"] * 8):
            self.embed(self.tokenize(texts, truncate=True))


def _content_encoder(tokenizer: Any) -> Callable[[list[str]], list[list[int]]]:
    """Texts → token ids without special tokens, safe to call from any thread at once.

    A fast tokenizer's own call re-applies its truncation and padding settings to the shared Rust
    tokenizer on every call, so concurrent calls need a lock; a private copy of the Rust tokenizer,
    set once to neither truncate nor pad, needs none. Slow tokenizers keep the call, under a lock.
    """
    if getattr(tokenizer, "is_fast", False):
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()

        def encode_fast(texts: list[str]) -> list[list[int]]:
            if len(texts) == 1:  # skips the hand-off to the tokenizer's thread pool
                return [backend.encode(texts[0], add_special_tokens=False).ids]
            return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=False)]

        return encode_fast
    lock = threading.Lock()

    def encode(texts: list[str]) -> list[list[int]]:
        with lock:
            return tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]

    return encode
