"""uvicorn's httptools protocol with the limits it lacks: a deadline for a request's headers, and a
cap on their count and size.

uvicorn times out idle keep-alive connections but not a client that sends its headers a byte every
few seconds, and httptools accepts any number of headers of any size: each such connection holds a
socket and memory for as long as the client likes. Bodies get their deadline in `http.Gate.read`.
Refusals count on /metrics (`embedops_failures_total`, reasons request_timeout and headers_too_large).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Headers must be complete this many seconds after a connection opens or a request starts.
HEADER_TIMEOUT_SECONDS = 10.0
# hyper's defaults (what TEI's axum server runs on): 100 headers; 64 KiB of them is ample for bearer tokens.
MAX_HEADERS = 100
MAX_HEADER_BYTES = 64 * 1024

_REFUSALS = {
    408: b"HTTP/1.1 408 Request Timeout\r\n",
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that answers 408 to headers that do not arrive in time and 431 to too many."""

    _deadline: asyncio.TimerHandle | None = None
    _header_count = 0
    _header_bytes = 0
    _refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = self._header_bytes = 0
        if self._deadline is None:
            self._arm()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if self._header_count > MAX_HEADERS or self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, f"more than {MAX_HEADERS} headers or {MAX_HEADER_BYTES} bytes of them")
            raise ValueError("header limit")  # stops the parser; uvicorn's own 400 is suppressed below
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:
            super().send_400_response(msg)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(HEADER_TIMEOUT_SECONDS, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._refuse(408, f"request headers not received within {HEADER_TIMEOUT_SECONDS:g} s")

    def _refuse(self, status: int, reason: str) -> None:
        """A JSON error in TEI's shape, then close: the request never reaches the app."""
        self._refused = True
        code = "request_timeout" if status == 408 else "headers_too_large"
        metrics = self.app_state.get("metrics")  # the app's lifespan state (serve/app.py)
        if metrics is not None:
            metrics.child(metrics.failures, code).inc()
        body = b'{"error": "%s", "error_type": "%s"}' % (reason.encode(), code.encode())
        head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        self.transport.write(_REFUSALS[status] + head + body)
        self.transport.close()
