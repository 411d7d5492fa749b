"""Admission before any work: a POST takes one of `--max-queue` places before its body is read, or is
refused with 429 + Retry-After at once.

Refusing here, ahead of reading, parsing and tokenizing, keeps a 429 cheap when the engine is
saturated, and bounds what the server holds in all: at most `max_queue` bodies of at most
`max_body_bytes` each.
"""

from __future__ import annotations

from contextlib import ExitStack

from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from embedops.errors import RequestError
from embedops.serve.batcher import Batcher
from embedops.serve.errors import error_response
from embedops.serve.metrics import ServeMetrics


class AdmissionMiddleware:
    """Holds a place in `batcher.admit()` for the whole life of every POST request."""

    def __init__(self, app: ASGIApp, batcher: Batcher, metrics: ServeMetrics) -> None:
        self.app = app
        self.batcher = batcher
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        with ExitStack() as place:
            try:
                place.enter_context(self.batcher.admit())
            except RequestError as refused:
                _label_route(scope)
                await error_response(Request(scope), refused, self.metrics)(scope, receive, send)
                return
            await self.app(scope, receive, send)


def _label_route(scope: Scope) -> None:
    """Name the route a refused request was for, so /metrics counts its 429 under that route."""
    for route in scope["app"].router.routes:
        if route.matches(scope)[0] is Match.FULL:
            scope["route"] = route
            return
