"""Errors as HTTP responses: every refusal of every route becomes a response here, and only here.

Refusals are `embedops.errors` types carrying their status and a machine-readable code. OpenAI
routes (`/v1/...`, `/embeddings`, `/models`) answer in OpenAI's envelope, which its SDKs parse into
typed exceptions; every other route answers in TEI's `{"error", "error_type"}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from embedops.errors import EmbedopsError, RequestError
from embedops.serve.metrics import ServeMetrics
from embedops.serve.middleware import CLIENT_CLOSED
from embedops.serve.schemas import ErrorResponse, OpenAIError

OPENAI_PATHS = ("/v1/", "/embeddings", "/models")
_OPENAI_TYPES = {
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


def json_response(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """orjson straight from numpy arrays: the vectors never become Python floats."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status,
        dict(headers or {}),
        media_type="application/json",
    )


def error_response(
    request: Request, exc: EmbedopsError, metrics: ServeMetrics, headers: Mapping[str, str] | None = None
) -> Response:
    """The response for `exc`, in the error shape the route's clients parse, counted by its code."""
    metrics.child(metrics.failures, error_code(exc)).inc()
    extra, body = error_body(request.scope["path"], exc)
    return Response(body, exc.http_status, {**(headers or {}), **extra}, media_type="application/json")


def error_code(exc: EmbedopsError) -> str:
    return getattr(exc, "code", type(exc).__name__)


def error_body(path: str, exc: EmbedopsError) -> tuple[dict[str, str], bytes]:
    """The headers and JSON body answering `exc` on `path`: OpenAI's envelope on its routes, else TEI's."""
    status = exc.http_status
    code = error_code(exc)
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if path.startswith(OPENAI_PATHS):
        body: OpenAIError | ErrorResponse = {
            "error": {
                "message": str(exc),
                "type": _OPENAI_TYPES.get(status, "invalid_request_error"),
                "param": getattr(exc, "param", None),
                "code": code,
            }
        }
    else:
        body = {"error": str(exc), "error_type": code}
    return headers, orjson.dumps(body)


def invalid(exc: ValidationError, model: type[BaseModel]) -> RequestError:
    """A short message naming fields and positions, without pydantic's union-member names."""
    problems: list[str] = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"] if isinstance(p, int) or p in model.model_fields)
        line = f"{where or 'body'}: {error['msg']}"
        if line not in problems:
            problems.append(line)
    param = next((str(e["loc"][0]) for e in exc.errors() if e["loc"]), None)
    return RequestError(f"invalid request: {'; '.join(problems[:4])}", param=param)


def too_large(what: str, limit: int) -> RequestError:
    return RequestError(f"{what} exceeds the {limit}-byte limit", status=413, code="payload_too_large")


class ClientGone(RequestError):
    def __init__(self) -> None:
        super().__init__("client closed the request", status=CLIENT_CLOSED, code="client_disconnected")


class ShuttingDown(RequestError):
    def __init__(self) -> None:
        super().__init__(
            "the server is shutting down and could not finish this request in time; retry it",
            status=503,
            code="shutting_down",
            retry_after=1,
        )


class Unauthorized(RequestError):
    def __init__(self) -> None:
        super().__init__(
            "missing or wrong API key: send 'Authorization: Bearer <key>'", status=401, code="invalid_api_key"
        )


class NotJson(RequestError):
    """A body that is not declared JSON: refused before it is read, so a web page's simple `text/plain`
    POST (sent by browsers without a CORS preflight) cannot spend the server's CPU."""

    def __init__(self, content_type: str) -> None:
        super().__init__(
            f"Content-Type must be application/json, not {content_type or 'missing'}",
            status=415,
            code="unsupported_media_type",
        )
