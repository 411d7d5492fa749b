"""The HTTP edge of a request: the caller's key, the body's type and size, and its validation."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from embedops.errors import RequestError
from embedops.serve.errors import ClientGone, NotJson, Unauthorized, invalid, too_large
from embedops.serve.service import Embedded
from embedops.serve.settings import ServeSettings

Body = TypeVar("Body", bound=BaseModel)
Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class Gate:
    """What every route checks before it works: the API key, and for POSTs a JSON body within the limit."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self._key = settings.api_key.get_secret_value().encode() if settings.api_key is not None else None

    def require_key(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._key):
            raise Unauthorized()

    async def read(self, request: Request, model: type[Body]) -> Body:
        """Check the key and the content type, then read (within the size limit) and validate the body."""
        self.require_key(request)
        content_type = request.headers.get("content-type", "")
        media = content_type.partition(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise NotJson(content_type)
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large(f"request body of {declared} bytes", limit)
        body = bytearray()
        deadline = self.settings.body_timeout
        try:
            async with asyncio.timeout(deadline):  # a client trickling its body holds a place: not for long
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise too_large("request body", limit)
        except ClientDisconnect:
            raise ClientGone() from None
        except TimeoutError:
            raise RequestError(
                f"request body not received within {deadline:g} s", status=408, code="request_timeout"
            ) from None
        try:
            return model.model_validate_json(bytes(body))
        except ValidationError as exc:
            raise invalid(exc, model) from exc


class DirectRoute(APIRoute):
    """A route whose endpoint takes the request alone and is handed it directly.

    FastAPI's dependency solving would add a quarter of a millisecond to every request on a 2-core
    server; the routes check the key and validate their bodies themselves (`Gate`), so they skip it
    and keep their OpenAPI entries.
    """

    def get_route_handler(self) -> Endpoint:
        return self.endpoint


def cost_headers(embedded: Embedded, started: float, compute_type: str) -> dict[str, str]:
    """TEI's response headers (milliseconds, counts): what a request cost and where its time went."""
    total = str(round((time.perf_counter() - started) * 1000))
    return {
        "x-compute-type": compute_type,
        "x-compute-time": total,
        "x-total-time": total,
        "x-compute-characters": str(embedded.characters),
        "x-compute-tokens": str(embedded.tokens),
        "x-total-tokens": str(embedded.tokens),
        "x-tokenization-time": str(round(embedded.tokenize_seconds * 1000)),
        "x-queue-time": str(round(embedded.queue_seconds * 1000)),
        "x-inference-time": str(round(embedded.inference_seconds * 1000)),
    }


def register_post(app: FastAPI, path: str, endpoint: Endpoint, summary: str, doc: dict[str, Any]) -> None:
    """A POST route that reads its own body (`Gate.read`); `doc` is its OpenAPI operation (`ApiDoc.operation`)."""
    app.router.add_api_route(
        path, endpoint, methods=["POST"], summary=summary, openapi_extra=doc, route_class_override=DirectRoute
    )


async def disconnected(request: Request) -> None:
    """Completes when the client hangs up (`http.disconnect`)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
