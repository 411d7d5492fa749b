"""The forward pass of an ONNX artifact without sentence-transformers' module chain: session, pooling, norm.

Serving one short text on a CPU spends as much time in the chain around the ONNX Runtime session
(numpy → torch → numpy, torch's pooling ops, and torch's and ONNX Runtime's thread pools contending for
the same cores) as in the parts that differ per request. The pooling and normalisation modules are
reproduced here in numpy, to the same definitions; a chain with any other module (a Dense layer, …)
is not taken over and keeps running through sentence-transformers. Opened from the artifact's files
(`from_directory`), a server never imports torch at all: it starts in a fraction of the time and
memory.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from embedops.models import cpu_session, read_json

Pool = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _cls(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return tokens[:, 0]


def _max(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask[:, :, None] > 0, tokens, np.float32(-1e9)).max(axis=1)


def _masked_sum(tokens: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sum over positions (a batched matmul, no (batch, seq, dim) temporary) and the weights' sum."""
    summed = np.matmul(weights[:, None, :], tokens)[:, 0]
    return summed, np.maximum(weights.sum(axis=1, keepdims=True), np.float32(1e-9))


def _mean(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    summed, count = _masked_sum(tokens, mask.astype(np.float32))
    return summed / count


def _mean_sqrt_len(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    summed, count = _masked_sum(tokens, mask.astype(np.float32))
    return summed / np.sqrt(count)


def _weighted_mean(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    positions = np.arange(1, mask.shape[1] + 1, dtype=np.float32)
    summed, weight = _masked_sum(tokens, mask.astype(np.float32) * positions)
    return summed / weight


def _last_token(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The last attended position, whichever side the batch was padded on."""
    width = mask.shape[1]
    last = width - 1 - np.argmax(mask[:, ::-1] > 0, axis=1)
    return tokens[np.arange(len(tokens)), last] * (mask.max(axis=1, keepdims=True) > 0)


# sentence-transformers' Pooling flags, in the order it concatenates their outputs.
_POOLS: tuple[tuple[str, Pool], ...] = (
    ("pooling_mode_cls_token", _cls),
    ("pooling_mode_max_tokens", _max),
    ("pooling_mode_mean_tokens", _mean),
    ("pooling_mode_mean_sqrt_len_tokens", _mean_sqrt_len),
    ("pooling_mode_weightedmean_tokens", _weighted_mean),
    ("pooling_mode_lasttoken", _last_token),
)


def _pools(flags: dict[str, Any]) -> list[Pool]:
    """The pooling functions a Pooling module's flags ask for."""
    return [pool for flag, pool in _POOLS if flags.get(flag, False)]


def _shrink_arena() -> Any:
    """Run options that hand the CPU arena's free chunks back to the system at the end of the run.

    The arena keeps what its largest batch needed: on all-MiniLM-L6-v2 int8, 760 MiB after batches of
    32 x 256 tokens against 150 MiB before. Without an arena that memory is returned, but those batches
    run 15-25 % slower (2-core Xeon, ORT 1.32), so the server keeps the arena and shrinks it when idle.
    """
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


class OnnxForward:
    """Token ids → sentence embeddings through the artifact's ONNX Runtime session and numpy pooling.

    Calls may come from several threads at once (the server's lanes). A session has one intra-op
    thread pool that concurrent runs share, so lanes of several threads each get a session apiece
    (`copies`; the model's weights are held once per copy); lanes of one thread share one session,
    which then has no pool. A call that finds every copy busy (the express lane beside all the
    regular ones) runs on the first copy beside its current run. A batch that runs alone (nothing else
    running or queued) may take `wide`, a session on every core of the lanes: one text took 5.5 ms p50
    through the server on two threads against 7.2 ms on one (2-core Xeon, all-MiniLM-L6-v2 int8).
    """

    def __init__(
        self, sessions: list[Any], pools: list[Pool], normalize: bool, wide: Any = None, pools_prompt: bool = True
    ) -> None:
        self.session = sessions[0]
        self.sessions = sessions
        self.wide = wide
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for session in sessions:
            self._free.put(session)
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.pools = pools
        self.normalize = normalize
        self.pools_prompt = pools_prompt  # the Pooling module's include_prompt

    @classmethod
    def from_model(cls, model: Any) -> OnnxForward | None:
        """Take over a loaded ONNX artifact's chain when it is session → Pooling → optional Normalize."""
        modules = list(model)
        session = getattr(getattr(modules[0], "auto_model", None), "session", None)
        kinds = [type(module).__name__ for module in modules[1:]]
        if session is None or kinds not in (["Pooling"], ["Pooling", "Normalize"]):
            return None
        flags = modules[1].get_config_dict()
        pools = _pools(flags)
        if not pools:
            return None
        return cls([session], pools, normalize=len(kinds) == 2, pools_prompt=flags.get("include_prompt", True))

    @classmethod
    def from_directory(
        cls,
        directory: Path,
        onnx_file: str,
        *,
        threads: int | None = None,
        copies: int = 1,
        wide_threads: int | None = None,
    ) -> OnnxForward | None:
        """The same chain read from the artifact's `modules.json` and pooling config; None for any other.
        `copies` sessions of `threads` intra-op threads each, and one of `wide_threads` for batches alone."""
        entries = read_json(directory / "modules.json")
        kinds = [str(entry.get("type", "")).rpartition(".")[2] for entry in entries]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return None
        flags = read_json(directory / entries[1]["path"] / "config.json")
        pools = _pools(flags)
        if not pools:
            return None
        sessions = [cpu_session(directory / onnx_file, threads=threads) for _ in range(max(1, copies))]
        wide = cpu_session(directory / onnx_file, threads=wide_threads) if wide_threads else None
        return cls(
            sessions, pools, normalize=len(kinds) == 3, wide=wide, pools_prompt=flags.get("include_prompt", True)
        )

    def __call__(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        pooled: np.ndarray | None = None,
        release_memory: bool = False,
        alone: bool = False,
    ) -> np.ndarray:
        """Embeddings of a padded batch; `pooled` (default: the attention mask) marks the positions pooled."""
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": np.zeros_like(input_ids)}
        feed = {name: given[name] for name in self.input_names}
        if release_memory:  # every session's arena; the server calls this when no batch is running
            for session in [*self.sessions, *([self.wide] if self.wide is not None else [])]:
                tokens = session.run(None, feed, _shrink_arena())[0]
        elif alone and self.wide is not None:
            tokens = self.wide.run(None, feed)[0]
        else:
            tokens = self._run(feed)
        tokens = tokens.astype(np.float32, copy=False)
        parts = [pool(tokens, attention_mask if pooled is None else pooled) for pool in self.pools]
        vectors = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if self.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), np.float32(1e-12))
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """The session's first output, on a free copy, else on the first one beside its current run."""
        try:
            session = self._free.get_nowait()
        except queue.Empty:
            return self.session.run(None, feed)[0]
        try:
            return session.run(None, feed)[0]
        finally:
            self._free.put(session)
