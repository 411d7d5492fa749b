"""Batching, admission and configuration, on the tiny model's real engine."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedops.cli import build_parser
from embedops.models import resolve
from embedops.serve.batcher import Batcher, BatchLimits
from embedops.serve.engine import Engine
from embedops.serve.lanes import CpuLanes
from embedops.serve.metrics import ServeMetrics
from embedops.serve.settings import ServeSettings


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine(resolve(tiny_model_dir), device="cpu")


def _batch_sizes(metrics: ServeMetrics) -> tuple[float, float]:
    count = metrics.registry.get_sample_value("embedops_batch_size_count") or 0.0
    total = metrics.registry.get_sample_value("embedops_batch_size_sum") or 0.0
    return count, total


def test_concurrent_requests_share_batches_and_get_their_own_rows(engine: Engine) -> None:
    texts = [f"sentence number {i} " + "pad " * (i % 7) for i in range(40)]

    async def scenario() -> tuple[list[np.ndarray], ServeMetrics]:
        metrics = ServeMetrics()
        batcher = Batcher(engine, metrics, BatchLimits(batch_size=16, max_batch_tokens=4096))
        batcher.start()
        ids = engine.tokenize(texts, truncate=True)
        futures = [batcher.embed(ids[i : i + 4]) for i in range(0, 40, 4)]
        results = await asyncio.gather(*futures)
        await batcher.close()
        return results, metrics

    results, metrics = asyncio.run(scenario())
    np.testing.assert_allclose(np.vstack(results), engine.model.encode(texts), atol=1e-5)
    count, total = _batch_sizes(metrics)
    assert total == 40 and count < 10  # ten requests, merged into fewer batches


def test_tokenize_matches_the_models_tokenizer_from_many_threads_at_once(engine: Engine) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [
        "Hello, WORLD! naïve café — ünïcödé 🤗 [SEP] [MASK]",
        "   leading and trailing spaces   ",
        "tabs\tand\nnewlines " * 3,
        "a " * 200,  # longer than the tiny model's 64-token window: cut, specials kept
    ]
    expected = engine.model.tokenize(texts)
    lengths = expected["attention_mask"].sum(dim=1).tolist()
    rows = [ids[:length] for ids, length in zip(expected["input_ids"].tolist(), lengths, strict=True)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: engine.tokenize(texts, truncate=True), range(64)))
    assert all(result == rows for result in results)


def test_token_budget_and_length_sorting_shape_batches(engine: Engine) -> None:
    short, long = [101, 2000, 102], [101, *range(2000, 2058), 102]

    async def scenario() -> list[list[int]]:
        batcher = Batcher(engine, ServeMetrics(), BatchLimits(batch_size=8, max_batch_tokens=180))
        batcher.embed([short, long, short, long, short, long])
        batches = []
        while batch := batcher._take_batch():
            batches.append([len(item.ids) for item in batch])
        return batches

    batches = asyncio.run(scenario())
    assert batches[0] == [3, 3, 3]  # the oldest input's batch, short ones grouped together
    assert all(max(b) * len(b) <= 180 for b in batches) and sum(map(len, batches)) == 6


def test_cancelled_work_never_reaches_the_engine(engine: Engine) -> None:
    async def scenario() -> tuple[float, float]:
        metrics = ServeMetrics()
        batcher = Batcher(engine, metrics, BatchLimits())
        abandoned = batcher.embed(engine.tokenize(["gone"], truncate=True))
        abandoned.cancel()
        batcher.start()
        await batcher.embed(engine.tokenize(["kept", "also kept"], truncate=True))
        await batcher.close()
        return _batch_sizes(metrics)

    assert asyncio.run(scenario()) == (1.0, 2.0)


class _Rendezvous(Engine):
    """The real engine, whose batches each wait until `parties` batches are running at once."""

    def __init__(self, path: Path, parties: int) -> None:
        self.together: threading.Barrier | None = None  # loading may run a batch to learn the dimension
        super().__init__(resolve(path), device="cpu")
        self.together = threading.Barrier(parties)

    def embed(self, batch: list[list[int]], **options: Any) -> np.ndarray:
        if self.together is not None:
            self.together.wait(timeout=10)  # broken (an engine error) unless every thread got a batch
        return super().embed(batch, **options)


def test_every_engine_thread_takes_a_share_of_one_large_request(tiny_model_dir: Path) -> None:
    engine = _Rendezvous(tiny_model_dir, parties=2)

    async def scenario() -> np.ndarray:
        batcher = Batcher(engine, ServeMetrics(), BatchLimits(concurrency=2, batch_size=1))
        batcher.start()
        try:
            return await batcher.embed(engine.tokenize(["one", "two"], truncate=True))
        finally:
            await batcher.close()

    np.testing.assert_allclose(asyncio.run(scenario()), engine.model.encode(["one", "two"]), atol=1e-5)


def test_a_batch_runs_alone_only_when_nothing_else_runs_or_waits(onnx_artifact: Path) -> None:
    """The engine is told a batch runs alone (and may spread over every core) for a lone request, not
    for the batches of a request that fills both lanes."""
    seen: list[bool] = []

    class Recording(Engine):
        def embed(self, batch: list[list[int]], **options: Any) -> np.ndarray:
            seen.append(options.get("alone", False))
            return super().embed(batch, **options)

    engine = Recording(resolve(onnx_artifact), lanes=CpuLanes(lanes=2, threads=1, cores=2))
    seen.clear()  # loading ran a batch to learn the width

    async def scenario() -> None:
        batcher = Batcher(engine, ServeMetrics(), BatchLimits(concurrency=2, batch_size=1))
        batcher.start()
        try:
            lone = await batcher.embed(engine.tokenize(["one"], truncate=True))
            assert seen == [True]
            many = await batcher.embed(engine.tokenize(["one"] * 6, truncate=True))
            np.testing.assert_allclose(many, np.repeat(lone, 6, axis=0), atol=1e-6)
        finally:
            await batcher.close()

    asyncio.run(scenario())
    assert seen.count(False) >= 5  # all but the last of the six one-input batches had others queued


def test_settings_come_from_env_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SERVE_PORT": "9100",
        "SERVE_NORMALIZE": "1",
        "SERVE_CONCURRENCY": "3",
        "SERVE_BATCH_SIZE": "7",
        "SERVE_HOST": "127.0.0.1",
        "SERVE_DEVICE": "cpu",
    }.items():
        monkeypatch.setenv(name, value)
    settings = ServeSettings(port=9200)
    assert (settings.port, settings.normalize, settings.concurrency, settings.batch_size) == (9200, True, 3, 7)
    assert (settings.host, settings.device) == ("127.0.0.1", "cpu")
    assert ServeSettings(**{k.removeprefix("SERVE_").lower(): v for k, v in settings.to_env().items()}) == settings


def test_seed_flags_parse() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--model",
            "m",
            "--port",
            "8010",
            "--normalize",
            "--concurrency",
            "2",
            "--batch-size",
            "16",
            "--device",
            "cpu",
            "--host",
            "127.0.0.1",
        ]
    )
    assert (args.model, args.port, args.normalize, args.concurrency, args.batch_size) == ("m", 8010, True, 2, 16)
    assert build_parser().parse_args(["serve"]).normalize is None  # unset flags leave SERVE_* in charge


def test_bad_setting_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from embedops.cli import main

    assert main(["serve", "--concurrency", "0"]) == 2
    assert "concurrency" in capsys.readouterr().err
