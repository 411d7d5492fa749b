"""Passages → finished vectors with a loaded engine, in the server's steps (prompt, tokenize, window,
embed, finish), so a vector equals what `/embed` returns for the same model and options. The local
job, every Ray actor and `eval` of an ONNX artifact use this one class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from embedops.errors import ConfigError
from embedops.serve.engine import Engine

# Most rows x width² in one batch. Attention memory grows with the square of the width: MiniLM int8 on
# ONNX Runtime peaked at 1,370 MiB for 32 inputs of 512 tokens, 639 MiB for 8 and 192 MiB for 32 of
# 128, at the same tokens/s, so long inputs go in small batches and short ones in full ones. The budget
# is per batch, and an engine in lanes runs one batch per lane at once.
_ATTENTION_BUDGET = 32 * 128**2


@dataclass(frozen=True)
class EncodeOptions:
    """The options that change a vector (all part of an embedding run's plan)."""

    dimensions: int | None = None
    normalize: bool = False
    batch_size: int = 32
    max_seq_length: int | None = None
    prompt_name: str | None = None


def batches(lengths: list[int], batch_size: int) -> Iterator[np.ndarray]:
    """Row indices in batches of similar length (so a batch pads little), under the attention budget."""
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < batch_size:
            if (end - start + 1) * lengths[order[end]] ** 2 > _ATTENTION_BUDGET:
                break
            end += 1
        yield order[start:end]
        start = end


class PassageEncoder:
    """A loaded engine with the options checked against it; counts what it embedded and cut."""

    def __init__(self, engine: Engine, options: EncodeOptions) -> None:
        info = engine.info
        if options.dimensions is not None and options.dimensions > info.dim:
            raise ConfigError(f"--dimensions must be at most the model's {info.dim}, not {options.dimensions}")
        if options.max_seq_length is not None and options.max_seq_length > info.max_seq_length:
            raise ConfigError(f"--max-seq-length must be at most the model's {info.max_seq_length}")
        if options.prompt_name is not None and options.prompt_name not in engine.prompts:
            raise ConfigError(
                f"--prompt-name {options.prompt_name!r} is not one of the model's prompts {sorted(engine.prompts)}"
            )
        self.engine = engine
        self.options = options
        self.prompt = engine.prompts[options.prompt_name] if options.prompt_name else ""
        self.prompt_tokens = engine.prompt_tokens(self.prompt)
        self.window = options.max_seq_length or info.max_seq_length
        self.truncated = 0

    @property
    def dim(self) -> int:
        return self.options.dimensions or self.engine.info.dim

    @property
    def normalized(self) -> bool:
        """Whether stored vectors are unit length: asked for, or the model's own and not cut."""
        return self.options.normalize or (self.engine.info.model_normalizes and self.options.dimensions is None)

    def encode(self, texts: list[str], progress: Callable[[int], object] | None = None) -> np.ndarray:
        engine, options = self.engine, self.options
        room = self.window - engine.tokenizer.specials
        content = engine.tokenizer.content_ids([self.prompt + text for text in texts] if self.prompt else texts)
        self.truncated += sum(len(ids) > room for ids in content)
        ids = [engine.with_special_tokens(c, truncate=True, window=self.window) for c in content]
        del content
        vectors = np.empty((len(ids), engine.info.dim), dtype=np.float32)

        def embed(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return rows, engine.embed([ids[i] for i in rows], prompt_tokens=self.prompt_tokens)

        def collect(results: Iterator[tuple[np.ndarray, np.ndarray]]) -> None:
            for rows, batch in results:
                engine.check_output(batch, len(rows))
                vectors[rows] = batch
                if progress is not None:
                    progress(len(rows))

        groups = batches([len(row) for row in ids], options.batch_size)
        if engine.concurrent_batches == 1:  # torch and accelerators: one batch at a time, on this thread
            collect(map(embed, groups))
        else:  # a batch per lane at once (serve/lanes.py), every batch submitted at once, taken in order
            with ThreadPoolExecutor(engine.concurrent_batches, thread_name_prefix="embed-lane") as lanes:
                try:
                    collect(lanes.map(embed, groups))
                except BaseException:
                    lanes.shutdown(cancel_futures=True)  # a failed batch drops those not yet started
                    raise
        return engine.finish(vectors, normalize=options.normalize, dimensions=options.dimensions)
