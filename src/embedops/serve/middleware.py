"""Per-request bookkeeping as plain ASGI (no BaseHTTPMiddleware copy of every body): the request
counter and latency histogram by route, and one JSON access-log line per request."""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedops.serve.metrics import ServeMetrics

access_logger = logging.getLogger("embedops.serve.access")
# Status logged and counted when the client left before any response was sent (nginx's convention).
CLIENT_CLOSED = 499


class ObservabilityMiddleware:
    """Counts every HTTP request by matched route template (never the raw path, which is unbounded)."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, *, access_log: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = CLIENT_CLOSED

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        except Exception:
            if status == CLIENT_CLOSED:  # no response started: the server error middleware answers 500
                status = 500
            raise
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.child(self.metrics.requests, label, str(status)).inc()
            self.metrics.child(self.metrics.request_seconds, label).observe(seconds)
            if self.access_log:
                client = scope.get("client")
                access_logger.info(
                    json.dumps(
                        {
                            "method": scope["method"],
                            "path": scope["path"],
                            "route": label,
                            "status": status,
                            "ms": round(seconds * 1000, 2),
                            "client": client[0] if client else None,
                            **scope.get("state", {}).get("access", {}),
                        }
                    )
                )
