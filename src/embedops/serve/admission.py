"""Admission before any work: a POST takes one of `--max-queue` places before its body is read, or is
refused with 429 + Retry-After.

Refusing here, ahead of reading, parsing and tokenizing, keeps a 429 cheap when the engine is
saturated, and bounds what the server holds in all: at most `max_queue` bodies of at most
`max_body_bytes` each.

A request that finds every place taken waits up to `ADMISSION_WAIT_SECONDS` for one, in arrival
order, before it is refused: a place freed in that time goes straight to the longest waiter. A
burst one request over capacity is then served instead of told to come back in a second, and clients
that ignore Retry-After and retry at once send fewer requests, each of which costs the event loop
CPU the engine needs. Measured on a 2-core Xeon at 4x capacity with such clients (bench/abuse_bench.py):
see bench/RESULTS.md, "Serving under abuse".
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from embedops.errors import RequestError
from embedops.serve.errors import OPENAI_PATHS, error_body, error_code
from embedops.serve.metrics import ServeMetrics

# Well inside the 50 ms a 429 may take when the engine is saturated, and longer than one small batch.
ADMISSION_WAIT_SECONDS = 0.02


class Places:
    """`max_queue` places for requests in flight, handed over in arrival order when all are taken."""

    def __init__(self, max_queue: int, metrics: ServeMetrics, wait: float = ADMISSION_WAIT_SECONDS) -> None:
        self.max_queue = max_queue
        self.metrics = metrics
        self.wait = wait
        self.taken = 0
        self._waiters: deque[asyncio.Future[bool]] = deque()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold one place for the body of the `async with`, or raise the 429 that refuses the request."""
        if self.taken < self.max_queue and not self._waiters:
            self.taken += 1
        elif not await self._handed_over():
            raise RequestError(
                f"server is at capacity ({self.max_queue} requests in flight); retry shortly",
                status=429,
                code="queue_full",
                retry_after=1,
            )
        self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.metrics.in_flight.dec()
            self._release()

    async def _handed_over(self) -> bool:
        """Wait in line for a freed place; False when none came within `wait` seconds."""
        if self.wait <= 0:
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self.wait, _expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._release()  # handed over as the client left: pass it on
            raise
        finally:
            timer.cancel()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the place changes hands; `taken` stays as it is
                return
        self.taken -= 1


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)  # left in the deque; _release skips it


# A refusal is answered from bytes built once, without a Request or Response object: measured on the
# event-loop thread with the engine busy, a 429 took about 105 µs of CPU through error_response and
# prometheus-client's label lookups, and 75 µs this way.
_Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class AdmissionMiddleware:
    """Holds one of `places` for the whole life of every POST request."""

    def __init__(self, app: ASGIApp, places: Places, metrics: ServeMetrics) -> None:
        self.app = app
        self.places = places
        self.metrics = metrics
        self._answers: dict[tuple[bool, str, object], _Answer] = {}
        self._routes: dict[str, BaseRoute] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        async with AsyncExitStack() as place:
            try:
                await place.enter_async_context(self.places.hold())
            except RequestError as refused:
                await self._refuse(scope, refused, send)
                return
            await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, refused: RequestError, send: Send) -> None:
        """The error answer for `refused`, counted under its reason and (on /metrics) its route."""
        self._label_route(scope)
        self.metrics.child(self.metrics.failures, error_code(refused)).inc()
        status, headers, body = self._answer(scope["path"], refused)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _answer(self, path: str, refused: RequestError) -> _Answer:
        key = (path.startswith(OPENAI_PATHS), str(refused), getattr(refused, "retry_after", None))
        answer = self._answers.get(key)
        if answer is None:
            extra, body = error_body(path, refused)
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            headers += [(name.lower().encode(), value.encode()) for name, value in extra.items()]
            answer = self._answers[key] = (refused.http_status, headers, body)
        return answer

    def _label_route(self, scope: Scope) -> None:
        """Name the route a refused request was for, so /metrics counts its 429 under that route."""
        path = scope["path"]
        route = self._routes.get(path)
        if route is None:
            route = next((r for r in scope["app"].router.routes if r.matches(scope)[0] is Match.FULL), None)
            if route is None:
                return  # an unknown path is not remembered: there are as many as clients care to send
            self._routes[path] = route
        scope["route"] = route
