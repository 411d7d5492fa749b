"""Dynamic batching: merge the inputs of concurrent requests into engine batches under a token budget.

The only caller of the engine. Requests reach it admitted (serve/admission.py); their inputs are
tokenized (off the event loop unless they are a few lines of text), queued, and grouped with inputs
of similar length so a batch pads little. Work of a request whose client went away is dropped before
it reaches the engine.

Fair between requests: a request's inputs are queued in rounds of one batch's worth (`batch_size`
inputs or `max_batch_tokens` tokens), and the queue serves round 0 of every request before round 1
of any. A request of 256 long inputs so runs one batch, then lets a one-word request that arrived
behind it through, instead of holding it for all of its own batches.

And quick for small requests beside large ones: a request of at most `EXPRESS_TOKENS` tokens goes to
an express queue, which one more engine thread serves whenever every regular one is running a batch of
larger requests, alongside it. On a 2-core Xeon (all-MiniLM-L6-v2 int8) a one-query batch took 1.3 /
2.1 ms (p50 / p99) alone and 1.4 / 6.3 ms beside a running 8 x 256-token batch; waiting for that
batch to end instead would add its 200 ms. Small requests among themselves are served by the regular
threads alone, batched exactly as before. How many regular threads run, and with how many ONNX
Runtime threads each, is serve/lanes.py's choice.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from embedops.errors import RequestError
from embedops.serve.engine import Engine
from embedops.serve.metrics import ServeMetrics

logger = logging.getLogger("embedops.serve")
# Up to this many characters a request is tokenized on the event loop: at ~0.75 µs a character on a
# 2-core server CPU that is under 0.4 ms, less than the round trip to a thread (~0.5 ms) that a
# single short text would otherwise add to its latency.
INLINE_TOKENIZE_CHARS = 512
# After a request or a batch of more tokens than this, the engine gives its memory back once nothing
# runs and nothing is queued (`Engine.release_memory`, about 2 ms). all-MiniLM-L6-v2 int8 held 140 MiB
# more after batches of 8 x 256 tokens, and nothing more after 32 short queries (about 400 tokens); a
# large request in small batches leaves its body, ids and vectors in the C heap, and lanes' batches
# running at once grow the arena together.
RELEASE_AFTER_TOKENS = 1024
# A request of at most this many tokens (a few queries) may run beside the regular batches.
EXPRESS_TOKENS = 512


@dataclass(frozen=True)
class BatchLimits:
    """How much work runs and waits at once."""

    concurrency: int = 1
    batch_size: int = 32
    max_batch_tokens: int = 2048


@dataclass(eq=False)
class _Job:
    """One request's inputs, where their embeddings land, and when (perf_counter seconds): queued, first
    batch started, last row delivered."""

    future: asyncio.Future[np.ndarray]
    rows: np.ndarray
    remaining: int
    prompt_tokens: int = 0  # leading positions of each input left out of pooling (Engine.prompt_tokens)
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None
    finished: float | None = None

    @property
    def queue_seconds(self) -> float:
        return (self.started or self.enqueued) - self.enqueued

    @property
    def inference_seconds(self) -> float:
        return (self.finished or self.enqueued) - (self.started or self.enqueued)


@dataclass(eq=False)
class _Item:
    job: _Job
    index: int
    ids: list[int]
    seq: int
    round: int = 0

    def __lt__(self, other: _Item) -> bool:
        """Queue order: earlier rounds first, then arrival."""
        return (self.round, self.seq) < (other.round, other.seq)


class Batcher:
    """Queue of token-id inputs served by `concurrency` engine threads, each running one batch at a time.

    The threads wait on the queue themselves and hand rows back with one call onto the event loop. A
    request at an idle server so pays two thread wake-ups, not the event-loop turns of a worker task
    and an executor round trip as well: 0.6 instead of 0.9 ms per request on a 2-core server.
    """

    def __init__(self, engine: Engine, metrics: ServeMetrics, limits: BatchLimits) -> None:
        self.engine = engine
        self.metrics = metrics
        self.limits = limits
        self._pending: list[_Item] = []  # a heap in queue order (round, arrival)
        self._express: list[_Item] = []  # the same, for requests of at most EXPRESS_TOKENS tokens
        self._heavy = 0  # regular threads running a batch from the regular (not express) queue
        self._running = 0  # threads running a batch, of either queue
        self._seq = itertools.count()
        self._queued = threading.Condition()  # guards both queues, _heavy, _running, _grown and _closing
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # Inputs sorted together to cut padding; bounded so the oldest input is never passed over for long.
        self._window = limits.batch_size * 4
        self._grown = False  # a batch over RELEASE_AFTER_TOKENS ran since memory was last released

    def start(self) -> None:
        """Start the engine threads; results are delivered on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(target=self._work, args=(False,), name=f"embedops-engine-{i}", daemon=True)
            for i in range(self.limits.concurrency)
        ]
        self._threads.append(threading.Thread(target=self._work, args=(True,), name="embedops-express", daemon=True))
        for thread in self._threads:
            thread.start()

    async def close(self) -> None:
        """Stop the engine threads; the server has already drained requests in flight before calling this."""
        with self._queued:
            self._closing = True
            self._queued.notify_all()
        for thread in self._threads:
            await asyncio.to_thread(thread.join)

    async def tokenize(
        self, texts: list[str], *, truncate: bool, left: bool = False, prompt: str = ""
    ) -> list[list[int]]:
        """Token ids of `texts`; a large request is tokenized in a thread so the event loop keeps answering."""
        if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
            return self.engine.tokenize(texts, truncate=truncate, left=left, prompt=prompt)
        return await asyncio.to_thread(self.engine.tokenize, texts, truncate=truncate, left=left, prompt=prompt)

    def embed(self, inputs: list[list[int]], prompt_tokens: int = 0) -> asyncio.Future[np.ndarray]:
        """Queue token-id inputs; the future gives one float32 row per input. Cancel it to drop the work."""
        return self.submit(inputs, prompt_tokens).future

    def submit(self, inputs: list[list[int]], prompt_tokens: int = 0) -> _Job:
        """`embed`, returning the job, whose times say how long it queued and ran once its future is done."""
        loop = asyncio.get_running_loop()
        rows = np.empty((len(inputs), self.engine.info.dim), np.float32)
        job = _Job(loop.create_future(), rows, len(inputs), prompt_tokens)
        items = []
        tokens = 0
        for index, ids in enumerate(inputs):
            turn = max(index // self.limits.batch_size, tokens // self.limits.max_batch_tokens)
            items.append(_Item(job, index, ids, next(self._seq), turn))
            tokens += len(ids)
        with self._queued:
            self._grown = self._grown or tokens > RELEASE_AFTER_TOKENS
            queue = self._express if tokens <= EXPRESS_TOKENS else self._pending
            for item in items:
                heapq.heappush(queue, item)
            self._show_depth()
            self._queued.notify_all()
        return job

    def _show_depth(self) -> None:
        self.metrics.queue_depth.set(len(self._pending) + len(self._express))

    def _take_batch(self, pending: list[_Item] | None = None) -> list[_Item]:
        """The batch holding the first live input in queue order, cut from a length-sorted window of
        the head of `pending` (the regular queue, else the express one).

        Called with `_queued` held. A future read here from an engine thread is only asked `done()`.
        """
        if pending is None:
            pending = self._pending or self._express
        window = [heapq.heappop(pending) for _ in range(min(len(pending), self._window))]
        live = [item for item in window if not item.job.future.done()]
        if not live:
            self._show_depth()
            return []
        oldest = live[0]
        live.sort(key=lambda item: len(item.ids))
        chunks: list[list[_Item]] = [[]]
        width = 0
        for item in live:
            chunk = chunks[-1]
            wider = max(width, self.engine.padded_width(len(item.ids)))
            if chunk and (
                len(chunk) >= self.limits.batch_size or wider * (len(chunk) + 1) > self.limits.max_batch_tokens
            ):
                chunks.append([item])
                width = self.engine.padded_width(len(item.ids))
            else:
                chunk.append(item)
                width = wider
        chosen = next(chunk for chunk in chunks if any(item is oldest for item in chunk))
        for chunk in chunks:
            if chunk is not chosen:
                for item in chunk:
                    heapq.heappush(pending, item)
        self._show_depth()
        return chosen

    def _work(self, express: bool) -> None:
        """One engine thread: wait for inputs, run their batch, hand the rows to the event loop.

        A regular thread takes the regular queue first, then the express one; the express thread takes
        only the express queue, and only while every regular thread runs a batch of larger requests.
        """
        while True:
            with self._queued:
                while not self._closing and not self._has_work(express):
                    self._queued.wait()
                if self._closing:
                    return
                queue = self._express if express or not self._pending else self._pending
                batch = self._take_batch(queue)
                heavy = bool(batch) and queue is self._pending
                self._heavy += heavy
                self._running += bool(batch)
                alone = self._running == 1 and not (self._pending or self._express)
                self._queued.notify_all()  # more work left, or the express thread may now run
                now = time.perf_counter()
                for item in batch:
                    if item.job.started is None:
                        item.job.started = now
                        self.metrics.queue_seconds.observe(now - item.job.enqueued)
                release = not batch and self._idle_after_growth()  # only cancelled inputs were left
            if batch:
                try:
                    self._run(batch, now, alone)
                finally:
                    with self._queued:
                        self._heavy -= heavy
                        self._running -= 1
                        release = self._idle_after_growth()
                        self._queued.notify_all()
            if release:
                self.engine.release_memory()

    def _idle_after_growth(self) -> bool:
        """Whether memory is to be given back now: large work ran since the last release, and no batch
        runs and nothing is queued (a batch still running on another lane would keep what it took past
        an earlier release). Called with `_queued` held."""
        release = self._grown and not (self._running or self._pending or self._express)
        self._grown = self._grown and not release
        return release

    def _has_work(self, express: bool) -> bool:
        if express:
            return bool(self._express) and self._heavy >= self.limits.concurrency
        return bool(self._pending or self._express)

    def _run(self, batch: list[_Item], now: float, alone: bool) -> None:
        ids = [item.ids for item in batch]
        self.metrics.batch_size.observe(len(batch))
        padded = self.engine.padded_width(max(map(len, ids))) * len(ids)
        self.metrics.batch_tokens.observe(padded)
        if padded > RELEASE_AFTER_TOKENS:
            with self._queued:
                self._grown = True
        outcome: np.ndarray | RequestError
        try:
            outcome = self.engine.embed(ids, alone=alone, prompt_tokens=[item.job.prompt_tokens for item in batch])
            self.engine.check_output(outcome, len(ids))
        except Exception as exc:  # an engine failure fails its requests, never the thread
            logger.exception("engine failed on a batch of %d inputs", len(ids))
            outcome = RequestError(
                f"the model failed on this request's batch ({type(exc).__name__}: {exc})",
                status=500,
                code="engine_error",
            )
        self.metrics.inference_seconds.observe(time.perf_counter() - now)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._deliver, batch, outcome)

    @staticmethod
    def _deliver(batch: list[_Item], outcome: np.ndarray | RequestError) -> None:
        """On the event loop: fill each request's rows, completing those whose last row this was.

        Whatever goes wrong here answers the batch's requests with a 500: an exception in a loop
        callback would otherwise be logged and leave their clients waiting forever.
        """
        try:
            for index, item in enumerate(batch):
                job = item.job
                if job.future.done():
                    continue
                if isinstance(outcome, RequestError):
                    job.future.set_exception(outcome)
                    continue
                job.rows[item.index] = outcome[index]
                job.remaining -= 1
                if job.remaining == 0:
                    job.finished = time.perf_counter()
                    job.future.set_result(job.rows)
        except Exception as exc:
            logger.exception("delivering a batch of %d inputs failed", len(batch))
            failure = RequestError(
                f"the server failed to deliver this request's embeddings ({type(exc).__name__}: {exc})",
                status=500,
                code="engine_error",
            )
            for item in batch:
                if not item.job.future.done():
                    item.job.future.set_exception(failure)
