"""The embedding service, free of any HTTP API: check → prompt → tokenize → queue → embed → finish.

Requests reach it already admitted (`serve/admission.py` holds their place in the queue's limit).

Every route of every API (seed, OpenAI, TEI) turns its request into `inputs` and `EmbedOptions`,
calls `embed`, and shapes the `Embedded` result its own way; limits and defaults live here once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedops.errors import RequestError
from embedops.serve.batcher import Batcher, BatchLimits
from embedops.serve.engine import Engine
from embedops.serve.errors import ClientGone, ShuttingDown
from embedops.serve.lanes import batch_tokens
from embedops.serve.metrics import ServeMetrics
from embedops.serve.settings import ServeSettings
from embedops.serve.tokenizer import Token
from embedops.vectors import Int8Ranges, quantize_embeddings, read_ranges

Disconnected = Callable[[], Coroutine[Any, Any, None]]  # its coroutine completes when the client hangs up


@dataclass(frozen=True)
class EmbedOptions:
    """Per-request choices; None means the server's default."""

    normalize: bool | None = None
    truncate: bool | None = None
    left: bool = False
    dimensions: int | None = None
    prompt_name: str | None = None
    precision: str = "float32"  # one of vectors.PRECISIONS


@dataclass(frozen=True)
class Embedded:
    """A request's vectors and what they cost (the figures TEI's response headers carry)."""

    vectors: np.ndarray  # float32, or the integer codes of the precision asked for
    width: int  # the vectors' dimensions (a binary row packs 8 of them in a byte)
    tokens: int
    characters: int
    tokenize_seconds: float
    queue_seconds: float
    inference_seconds: float


class EmbeddingService:
    """One loaded engine behind the shared batcher, with the server's limits and defaults."""

    def __init__(self, settings: ServeSettings, engine: Engine, metrics: ServeMetrics) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.info = engine.info
        self.ready = False
        self.failed: str | None = None  # why the model cannot run here, once warm-up has shown it
        self._ranges: Int8Ranges | None = None
        self._ranges_lock = asyncio.Lock()
        self.ranges_source: str | None = None  # where the int8/uint8 ranges came from, once asked for
        self.batcher = Batcher(
            engine,
            metrics,
            BatchLimits(
                settings.concurrency or engine.concurrent_batches,
                settings.batch_size,
                batch_tokens(settings.max_batch_tokens, engine.info.device),
            ),
        )
        ref = engine.ref
        # A name, never a server path: hub ids and the bundled model by their id, a folder by its name.
        self.model_name = settings.served_model_name or (
            ref.reference if ref.source in ("bundled", "hub") else ref.path.name
        )

    async def embed(
        self, inputs: list[str] | list[list[int]], options: EmbedOptions, disconnected: Disconnected
    ) -> Embedded:
        """Vectors of texts (or token-id lists); the work is dropped as soon as `disconnected` completes."""
        self.check_dimensions(options.dimensions)
        truncate = self.settings.auto_truncate if options.truncate is None else options.truncate
        texts = [text for text in inputs if isinstance(text, str)]
        self.check_count(len(inputs))
        started = time.perf_counter()
        prompt = ""
        if len(texts) == len(inputs):
            self.check_lengths(texts)
            prompt = self.prompt(options.prompt_name)
            ids = await self.batcher.tokenize(texts, truncate=truncate, left=options.left, prompt=prompt)
        else:
            if options.prompt_name is not None:
                raise RequestError("prompt_name applies to texts, not to token ids", param="prompt_name")
            ids = self.engine.prepare_ids([list(map(int, row)) for row in inputs], truncate=truncate)
        tokenized = time.perf_counter()
        job = self.batcher.submit(ids, self.engine.prompt_tokens(prompt))
        vectors = await _unless_disconnected(job.future, disconnected)
        tokens = sum(map(len, ids))
        self.metrics.input_tokens.inc(tokens)
        normalize = self.settings.normalize if options.normalize is None else options.normalize
        vectors = self.engine.finish(vectors, normalize=normalize, dimensions=options.dimensions)
        ranges = await self.ranges() if options.precision in ("int8", "uint8") else None
        return Embedded(
            vectors=quantize_embeddings(vectors, options.precision, ranges),
            width=int(vectors.shape[1]),
            tokens=tokens,
            characters=sum(map(len, texts)),
            tokenize_seconds=tokenized - started,
            queue_seconds=job.queue_seconds,
            inference_seconds=job.inference_seconds,
        )

    async def ranges(self) -> Int8Ranges:
        """The int8/uint8 calibration ranges: the artifact's (written when it was quantized), else measured
        once on the built-in general-domain texts with this engine (the model's own vectors, before any
        request's normalize or dimensions), off the event loop."""
        async with self._ranges_lock:
            if self._ranges is not None:
                return self._ranges
            loaded, self.ranges_source = await asyncio.to_thread(self._load_or_measure_ranges)
            self._ranges = loaded
            return loaded

    def _load_or_measure_ranges(self) -> tuple[Int8Ranges, str]:
        stored = read_ranges(self.engine.ref.path)
        if stored is not None:
            return stored
        from embedops.quantize.drift import built_in_texts  # no torch: a resource file

        texts = built_in_texts()
        vectors = np.vstack(
            [
                self.engine.embed(self.engine.tokenize(texts[i : i + 32], truncate=True))
                for i in range(0, len(texts), 32)
            ]
        )
        return Int8Ranges.of(vectors), f"measured on first use ({len(texts)} built-in texts)"

    def tokens(self, texts: list[str], *, add_special_tokens: bool, prompt_name: str | None) -> list[list[Token]]:
        """Each text's tokens with their spans (TEI's /tokenize), under the same input limits as /embed."""
        self.check_count(len(texts))
        self.check_lengths(texts)
        tokenizer, prompt = self.engine.tokenizer, self.prompt(prompt_name)
        return [tokenizer.tokens(prompt + text, add_special_tokens=add_special_tokens) for text in texts]

    def decode(self, batch: list[list[int]], *, skip_special_tokens: bool) -> list[str]:
        """Texts of token-id lists (TEI's /decode)."""
        self.check_count(len(batch))
        self.engine.check_vocabulary(batch, param="ids")
        return [self.engine.tokenizer.decode(ids, skip_special_tokens) for ids in batch]

    def check_count(self, inputs: int) -> None:
        if inputs > self.settings.max_inputs:
            raise RequestError(
                f"{inputs} inputs in one request; the limit is {self.settings.max_inputs}",
                status=413,
                code="too_many_inputs",
                param="input",
            )

    def check_lengths(self, texts: list[str]) -> None:
        for index, text in enumerate(texts):
            if len(text) > self.settings.max_chars:
                raise RequestError(
                    f"input {index} has {len(text)} characters; the limit is {self.settings.max_chars}",
                    status=413,
                    code="input_too_long",
                    param="input",
                )

    def check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is not None and dimensions > self.info.dim:
            raise RequestError(f"dimensions must be between 1 and {self.info.dim}", param="dimensions")

    def prompt(self, prompt_name: str | None) -> str:
        """The text of the model's prompt `prompt_name` ("" for none)."""
        if prompt_name is None:
            return ""
        prompts = self.engine.prompts
        if prompt_name not in prompts:
            raise RequestError(
                f"prompt_name {prompt_name!r} is not one of the model's prompts {sorted(prompts)}",
                param="prompt_name",
            )
        return prompts[prompt_name]


async def _unless_disconnected(work: asyncio.Future[np.ndarray], disconnected: Disconnected) -> np.ndarray:
    """Await `work`, or cancel it (the batcher then skips it) as soon as the client hangs up.

    The request's own task is cancelled only by uvicorn, when a graceful shutdown outlasts its
    timeout; the client, still connected, then gets a JSON 503 with Retry-After rather than
    uvicorn's plain-text 500.
    """
    watcher = asyncio.ensure_future(disconnected())
    watcher.add_done_callback(lambda _: work.cancel())
    try:
        return await work
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling() > 0:
            task.uncancel()
            raise ShuttingDown() from None
        if watcher.done() and not watcher.cancelled():
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()
