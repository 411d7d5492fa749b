"""What `eval --model` accepts: anything that turns texts into vectors.

An `Encoder` is a name plus `encode(texts, batch_size)`. Models (artifact directories of any backend,
plain SentenceTransformer directories, hub ids) are `ModelEncoder`s; a live endpoint becomes one more
`Encoder` kind, opened by URL in `open_encoder`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from embedops.models import ModelRef, resolve
from embedops.serve.engine import Engine

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Texts per encoder call: large enough to keep batches full, small enough for a smooth progress bar.
_CALL_BATCHES = 16


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into one vector each; `name` labels it in tables and reports."""

    name: str

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray: ...


class ModelEncoder:
    """A model reference, resolved now (cheap, fails fast) and loaded on first use.

    An ONNX artifact on the CPU is encoded by the server's engine (`serve.engine.Engine`, in lanes, as
    `embedops embed` does): its scores are those of the vectors it serves, and it runs about twice as
    fast as sentence-transformers' `encode` of the same graph (bench/RESULTS.md, corpus re-embedding).
    Every other model (and an ONNX artifact whose module chain the engine does not take over, with a
    Dense layer say) goes through `embedops.models.load` and `SentenceTransformer.encode`.
    """

    def __init__(self, reference: str, *, device: str | None = None) -> None:
        self.name = reference
        self.ref: ModelRef = resolve(reference)
        self.device = device
        self._model: SentenceTransformer | Engine | None = None

    @property
    def artifact_dir(self) -> Path | None:
        """Where to record results: only embedops artifacts carry a manifest to write into."""
        return self.ref.path if self.ref.source == "artifact" else None

    def load(self) -> SentenceTransformer | Engine:
        """The model, loaded once; called before timing so the first model does not pay the imports."""
        if self._model is None:
            if self.ref.manifest.backend == "onnx" and self.device in (None, "cpu"):
                from embedops.serve.lanes import batch_job_lanes

                engine = Engine(self.ref, device="cpu", lanes=batch_job_lanes())
                # The SentenceTransformer where the artifact's module chain needs one (a Dense layer, ...).
                self._model = engine.model if engine.model is not None else engine
            else:
                from embedops.models import load

                self._model = load(self.ref, device=self.device)
        return self._model

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        model = self.load()
        if isinstance(model, Engine):
            from embedops.embed.encoder import EncodeOptions, PassageEncoder

            return PassageEncoder(model, EncodeOptions(batch_size=batch_size)).encode(list(texts))
        # prompt="": texts as the server embeds them, without a default_prompt_name the model may set.
        return model.encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False, prompt=""
        )

    def close(self) -> None:
        """Drop the model, so comparing several models holds one in memory at a time."""
        self._model = None


def open_encoder(reference: str, *, device: str | None = None) -> Encoder:
    """The encoder for one `--model` value."""
    if reference.startswith(("http://", "https://")):
        from embedops.serve.client import EndpointEncoder

        return EndpointEncoder(reference, api_key=os.environ.get("EMBEDOPS_API_KEY"))
    return ModelEncoder(reference, device=device)


def embed(encoder: Encoder, texts: Sequence[str], *, batch_size: int, label: str) -> np.ndarray:
    """L2-normalised embeddings of `texts`, encoded longest first with a progress bar on stderr.

    Sorting by length keeps padding low whatever the encoder; the order is restored at the end.
    """
    from tqdm.auto import tqdm

    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    step = batch_size * _CALL_BATCHES
    parts: list[np.ndarray] = []
    with tqdm(total=len(texts), desc=label, unit="text", file=sys.stderr, leave=False) as bar:
        for start in range(0, len(order), step):
            chunk = [texts[i] for i in order[start : start + step]]
            parts.append(np.asarray(encoder.encode(chunk, batch_size), dtype=np.float32))
            bar.update(len(chunk))
    encoded = np.concatenate(parts)
    vectors = np.empty_like(encoded)
    vectors[order] = encoded
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)
