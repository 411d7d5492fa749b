"""Admission before any work: a POST takes one of `--max-queue` places before its body is read, or is
refused with 429 + Retry-After at once.

Refusing here, ahead of reading, parsing and tokenizing, keeps a 429 cheap when the engine is
saturated, and bounds what the server holds in all: at most `max_queue` bodies of at most
`max_body_bytes` each. A refused request does not wait for a place: measured with clients that ignore
Retry-After at 4x capacity on a 2-core Xeon, a 20 ms wait in line cut their 429s by a third but took
goodput from 84 % to 80 % of 1x and the 429s' p99 from 14 to 70 ms (bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from embedops.errors import RequestError
from embedops.serve.errors import OPENAI_PATHS, error_body, error_code
from embedops.serve.metrics import ServeMetrics


class Places:
    """`max_queue` places for requests in flight."""

    def __init__(self, max_queue: int, metrics: ServeMetrics) -> None:
        self.max_queue = max_queue
        self.metrics = metrics
        self.taken = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold one place for the body of the `with`, or raise the 429 that refuses the request."""
        if self.taken >= self.max_queue:
            raise RequestError(
                f"server is at capacity ({self.max_queue} requests in flight); retry shortly",
                status=429,
                code="queue_full",
                retry_after=1,
            )
        self.taken += 1
        self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.taken -= 1
            self.metrics.in_flight.dec()


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
        with ExitStack() as place:
            try:
                place.enter_context(self.places.hold())
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
