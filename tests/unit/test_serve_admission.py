"""Admission places: a full server makes a request wait a little, in line, before refusing it."""

from __future__ import annotations

import asyncio
import time

import pytest

from embedops.errors import RequestError
from embedops.serve.admission import Places
from embedops.serve.metrics import ServeMetrics


async def _held(places: Places, hold: asyncio.Event, log: list[str], name: str) -> None:
    try:
        async with places.hold():
            log.append(f"{name} in")
            await hold.wait()
    except RequestError as refused:
        log.append(f"{name} {refused.http_status}")


def test_a_full_server_refuses_after_the_wait_with_retry_after() -> None:
    async def scenario() -> tuple[RequestError, float, int]:
        places = Places(2, ServeMetrics(), wait=0.05)
        async with places.hold(), places.hold():
            started = time.perf_counter()
            with pytest.raises(RequestError) as refused:
                async with places.hold():
                    pass
            waited = time.perf_counter() - started
        return refused.value, waited, places.taken

    refused, waited, taken = asyncio.run(scenario())
    assert refused.http_status == 429 and refused.retry_after == 1 and refused.code == "queue_full"
    assert 0.045 <= waited < 0.5
    assert taken == 0


def test_no_wait_refuses_at_once() -> None:
    async def scenario() -> float:
        places = Places(1, ServeMetrics(), wait=0)
        async with places.hold():
            started = time.perf_counter()
            with pytest.raises(RequestError):
                async with places.hold():
                    pass
            return time.perf_counter() - started

    assert asyncio.run(scenario()) < 0.01


def test_a_freed_place_goes_to_the_longest_waiter_and_newcomers_queue_behind() -> None:
    async def scenario() -> tuple[list[str], int]:
        places = Places(1, ServeMetrics(), wait=0.5)
        log: list[str] = []
        first, second, third = asyncio.Event(), asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(_held(places, first, log, "a"))
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(_held(places, second, log, "b"))
        await asyncio.sleep(0.01)
        newcomer = asyncio.create_task(_held(places, third, log, "c"))
        await asyncio.sleep(0.01)
        first.set()  # a leaves: its place goes to b, not to c who came later
        await asyncio.sleep(0.01)
        second.set()
        await asyncio.sleep(0.01)
        third.set()
        await asyncio.gather(holder, waiter, newcomer)
        return log, places.taken

    log, taken = asyncio.run(scenario())
    assert log == ["a in", "b in", "c in"]
    assert taken == 0


def test_a_waiter_whose_client_left_passes_the_place_on() -> None:
    async def scenario() -> tuple[list[str], int]:
        places = Places(1, ServeMetrics(), wait=0.5)
        log: list[str] = []
        first, rest = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(_held(places, first, log, "a"))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(_held(places, rest, log, "b"))
        await asyncio.sleep(0.01)
        stays = asyncio.create_task(_held(places, rest, log, "c"))
        await asyncio.sleep(0.01)
        first.set()  # the place is handed to b ...
        await asyncio.sleep(0)
        gone.cancel()  # ... whose client hangs up before it runs: c gets it
        await asyncio.sleep(0.01)
        rest.set()
        await asyncio.gather(holder, stays)
        with pytest.raises(asyncio.CancelledError):
            await gone
        return log, places.taken

    log, taken = asyncio.run(scenario())
    assert log == ["a in", "c in"]
    assert taken == 0


def test_in_flight_gauge_counts_holders_only() -> None:
    async def scenario() -> list[float]:
        metrics = ServeMetrics()
        places = Places(1, metrics, wait=0.01)
        seen = []
        async with places.hold():
            with pytest.raises(RequestError):
                async with places.hold():
                    pass
            seen.append(metrics.registry.get_sample_value("embedops_in_flight_requests"))
        seen.append(metrics.registry.get_sample_value("embedops_in_flight_requests"))
        return seen

    assert asyncio.run(scenario()) == [1.0, 0.0]
