"""FastAPI routes: check the caller, read and validate the body, await the batcher, shape the response.

Routes: seed `POST /embed`, OpenAI `POST /v1/embeddings`, TEI `POST /` (what huggingface_hub's
InferenceClient posts to for a URL model), and open `GET /healthz /readyz /info /metrics`.
Every refusal is an `embedops.errors` type, turned into a response in `_error_response` only.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from embedops import __version__
from embedops.errors import EmbedopsError, RequestError
from embedops.serve.batcher import Batcher, BatchLimits
from embedops.serve.engine import Engine
from embedops.serve.metrics import ServeMetrics
from embedops.serve.middleware import CLIENT_CLOSED, ObservabilityMiddleware
from embedops.serve.schemas import (
    EmbedRequest,
    ErrorResponse,
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIError,
    SeedEmbedResponse,
)
from embedops.serve.settings import ServeSettings

logger = logging.getLogger("embedops.serve")
Body = TypeVar("Body", bound=BaseModel)
Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]
_OPENAI_TYPES = {
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """orjson straight from numpy arrays: the vectors never become Python floats."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status,
        headers,
        media_type="application/json",
    )


def create_app(settings: ServeSettings, engine: Engine) -> FastAPI:
    """The server for one loaded engine; `settings` carries every limit and default."""
    metrics = ServeMetrics()
    batcher = Batcher(
        engine,
        metrics,
        BatchLimits(settings.concurrency, settings.batch_size, settings.max_batch_tokens, settings.max_queue),
    )
    info = engine.info
    state: dict[str, Any] = {"ready": False, "failed": None}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        warmup = asyncio.create_task(_warm_up())
        yield
        warmup.cancel()
        await batcher.close()

    async def _warm_up() -> None:
        if settings.warmup:
            try:
                await asyncio.to_thread(engine.warmup)
            except Exception as exc:  # the model cannot run here: say why on every probe, never turn ready
                logger.exception("warm-up failed; the server will not turn ready")
                state["failed"] = f"warm-up failed: {type(exc).__name__}: {exc}"
                return
        state["ready"] = True
        logger.info("ready: %s (%s, %s, %s, dim %d)", info.model, info.backend, info.dtype, info.forward, info.dim)

    app = FastAPI(title="embedops", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, access_log=settings.access_log)

    def require_api_key(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expected = settings.api_key.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise RequestError(
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                status=401,
                code="invalid_api_key",
            )

    async def read_request(request: Request, model: type[Body]) -> Body:
        """Check the caller's key, then read (within the size limit) and validate the JSON body."""
        require_api_key(request)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise _too_large(f"request body of {declared} bytes")
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > settings.max_body_bytes:
                    raise _too_large("request body")
        except ClientDisconnect:
            raise _ClientGone() from None
        try:
            return model.model_validate_json(bytes(body))
        except ValidationError as exc:
            raise _invalid(exc, model) from exc

    def _too_large(what: str) -> RequestError:
        return RequestError(
            f"{what} exceeds the {settings.max_body_bytes}-byte limit", status=413, code="payload_too_large"
        )

    def check_texts(texts: list[str]) -> None:
        if len(texts) > settings.max_inputs:
            raise RequestError(
                f"{len(texts)} inputs in one request; the limit is {settings.max_inputs}",
                status=413,
                code="too_many_inputs",
                param="input",
            )
        for index, text in enumerate(texts):
            if len(text) > settings.max_chars:
                raise RequestError(
                    f"input {index} has {len(text)} characters; the limit is {settings.max_chars}",
                    status=413,
                    code="input_too_long",
                    param="input",
                )

    def check_dimensions(dimensions: int | None) -> None:
        if dimensions is not None and dimensions > info.dim:
            raise RequestError(f"dimensions must be between 1 and {info.dim}", param="dimensions")

    async def encode(
        request: Request,
        texts: list[str] | None = None,
        ids: list[list[int]] | None = None,
        *,
        truncate: bool | None,
        left: bool = False,
    ) -> tuple[np.ndarray, int]:
        """Embed texts (or token ids) in the shared batches; drop the work if the client disconnects."""
        truncate = settings.auto_truncate if truncate is None else truncate
        with batcher.admit():
            if texts is not None:
                check_texts(texts)
                ids = await batcher.tokenize(texts, truncate=truncate, left=left)
            else:
                assert ids is not None
                if len(ids) > settings.max_inputs:
                    check_texts([""] * len(ids))
                ids = batcher.prepare_ids(ids, truncate=truncate)
            tokens = sum(map(len, ids))
            vectors = await _unless_disconnected(request, batcher.embed(ids))
        metrics.input_tokens.inc(tokens)
        request.state.access = {"inputs": len(ids), "tokens": tokens}
        return vectors, tokens

    def finish(vectors: np.ndarray, *, normalize: bool | None, dimensions: int | None) -> np.ndarray:
        normalize = settings.normalize if normalize is None else normalize
        return engine.finish(vectors, normalize=normalize, dimensions=dimensions)

    def with_prompt(texts: list[str], prompt_name: str | None) -> list[str]:
        if prompt_name is None:
            return texts
        prompts = engine.prompts
        if prompt_name not in prompts:
            raise RequestError(
                f"prompt_name {prompt_name!r} is not one of the model's prompts {sorted(prompts)}",
                param="prompt_name",
            )
        return [prompts[prompt_name] + text for text in texts]

    async def embed_request(request: Request) -> tuple[EmbedRequest, np.ndarray, int]:
        body = await read_request(request, EmbedRequest)
        check_dimensions(body.dimensions)
        texts, ids = _texts_or_ids(body.inputs)
        if texts is not None:
            texts = with_prompt(texts, body.prompt_name)
        elif body.prompt_name is not None:
            raise RequestError("prompt_name applies to texts, not to token ids", param="prompt_name")
        vectors, tokens = await encode(
            request, texts, ids, truncate=body.truncate, left=body.truncation_direction.lower() == "left"
        )
        return body, finish(vectors, normalize=body.normalize, dimensions=body.dimensions), tokens

    def embedding_route(path: str, summary: str, body: type[BaseModel]) -> Callable[[Endpoint], Endpoint]:
        def register(endpoint: Endpoint) -> Endpoint:
            app.router.add_api_route(
                path,
                endpoint,
                methods=["POST"],
                summary=summary,
                openapi_extra=_body(body),
                route_class_override=_DirectRoute,
            )
            return endpoint

        return register

    @embedding_route("/embed", "Embed texts (the seed's API)", EmbedRequest)
    async def embed(request: Request) -> Response:
        _, vectors, tokens = await embed_request(request)
        content: SeedEmbedResponse = {
            "embeddings": vectors,
            "dim": int(vectors.shape[1]),
            "model": info.model,
            "usage": {"tokens": tokens},
        }
        return json_response(content)

    @embedding_route("/", "Embed texts (text-embeddings-inference API)", EmbedRequest)
    async def tei_embed(request: Request) -> Response:
        _, vectors, _ = await embed_request(request)
        return json_response(vectors)

    @embedding_route("/v1/embeddings", "Embed texts (OpenAI API)", OpenAIEmbeddingRequest)
    async def openai_embeddings(request: Request) -> Response:
        body = await read_request(request, OpenAIEmbeddingRequest)
        check_dimensions(body.dimensions)
        texts, ids = _texts_or_ids(body.input)
        vectors, tokens = await encode(request, texts, ids, truncate=None)
        vectors = finish(vectors, normalize=None, dimensions=body.dimensions)
        if body.encoding_format == "base64":
            rows: list[Any] = [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in vectors]
        else:
            rows = list(vectors)
        content: OpenAIEmbeddingResponse = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
            "model": info.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return json_response(content)

    @app.get("/healthz", summary="Liveness: fails only when the model could not run at all")
    async def healthz() -> Response:
        if state["failed"]:
            return json_response({"status": "failed", "error": state["failed"]}, 503)
        return json_response({"status": "ok"})

    @app.get("/readyz", summary="Readiness: warmed up and accepting work")
    async def readyz() -> Response:
        if state["failed"]:
            return json_response({"status": "failed", "error": state["failed"]}, 503)
        if not state["ready"]:
            return json_response({"status": "warming up"}, 503, {"Retry-After": "1"})
        return json_response({"status": "ready"})

    @app.get("/info", summary="What is served, and under which limits")
    async def info_route() -> Response:
        return json_response(
            {
                "model": info.model,
                "path": str(engine.ref.path),
                "dim": info.dim,
                "device": info.device,
                "backend": info.backend,
                "dtype": info.dtype,
                "forward": info.forward,
                "quantization": info.quantization,
                "batch_invariant": info.batch_invariant,
                "cpu": info.cpu,
                "max_seq_length": info.max_seq_length,
                "normalize": settings.normalize,
                "model_normalizes": info.model_normalizes,
                "auto_truncate": settings.auto_truncate,
                "limits": {
                    "max_inputs": settings.max_inputs,
                    "max_chars": settings.max_chars,
                    "max_body_bytes": settings.max_body_bytes,
                    "max_queue": settings.max_queue,
                    "batch_size": settings.batch_size,
                    "max_batch_tokens": settings.max_batch_tokens,
                    "concurrency": settings.concurrency,
                },
                "auth": settings.api_key is not None,
                "ready": state["ready"],
                "version": __version__,
            }
        )

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics_route() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(EmbedopsError)
    async def embedops_error(request: Request, exc: EmbedopsError) -> Response:
        return _error_response(request, exc, metrics)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else "method_not_allowed"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        error = RequestError(message, status=exc.status_code, code=code)
        return _error_response(request, error, metrics, exc.headers)  # 405 keeps its Allow header

    app.state.batcher = batcher
    app.state.metrics = metrics
    return app


def _texts_or_ids(raw: Any) -> tuple[list[str] | None, list[list[int]] | None]:
    """A validated `Inputs` value as a list of texts or a list of token-id lists (the other is None)."""
    if isinstance(raw, str):
        return [raw], None
    if isinstance(raw[0], str):
        return list(raw), None
    if isinstance(raw[0], int):
        return None, [list(raw)]
    return None, [list(ids) for ids in raw]


class _DirectRoute(APIRoute):
    """A route whose endpoint takes the request alone and is handed it directly.

    FastAPI's dependency solving would add a quarter of a millisecond to every request on a 2-core
    server; the embedding routes check the key and validate their bodies themselves, so they skip it
    and keep their OpenAPI entries.
    """

    def get_route_handler(self) -> Endpoint:
        return self.endpoint


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads and validates `model` itself."""
    return {"requestBody": {"content": {"application/json": {"schema": model.model_json_schema()}}, "required": True}}


def _error_response(
    request: Request, exc: EmbedopsError, metrics: ServeMetrics, headers: Mapping[str, str] | None = None
) -> Response:
    """The one place an error becomes an HTTP response, in the error shape the route's clients parse."""
    status = exc.http_status
    code = getattr(exc, "code", type(exc).__name__)
    metrics.failures.labels(code).inc()
    headers = dict(headers or {})
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if request.url.path.startswith("/v1/"):
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
    return json_response(body, status, headers)


def _invalid(exc: ValidationError, model: type[BaseModel]) -> RequestError:
    """A short message naming fields and positions, without pydantic's union-member names."""
    problems: list[str] = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"] if isinstance(p, int) or p in model.model_fields)
        line = f"{where or 'body'}: {error['msg']}"
        if line not in problems:
            problems.append(line)
    param = next((str(e["loc"][0]) for e in exc.errors() if e["loc"]), None)
    return RequestError(f"invalid request: {'; '.join(problems[:4])}", param=param)


class _ClientGone(RequestError):
    def __init__(self) -> None:
        super().__init__("client closed the request", status=CLIENT_CLOSED, code="client_disconnected")


class _ShuttingDown(RequestError):
    def __init__(self) -> None:
        super().__init__(
            "the server is shutting down and could not finish this request in time; retry it",
            status=503,
            code="shutting_down",
            retry_after=1,
        )


async def _unless_disconnected(request: Request, work: asyncio.Future[np.ndarray]) -> np.ndarray:
    """Await `work`, or cancel it (the batcher then skips it) as soon as the client hangs up.

    The request's own task is cancelled only by uvicorn, when a graceful shutdown outlasts its
    timeout; the client, still connected, then gets a JSON 503 with Retry-After rather than
    uvicorn's plain-text 500.
    """
    watcher = asyncio.ensure_future(_disconnected(request))
    watcher.add_done_callback(lambda _: work.cancel())
    try:
        return await work
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling() > 0:
            task.uncancel()
            raise _ShuttingDown() from None
        if watcher.done() and not watcher.cancelled():
            raise _ClientGone() from None
        raise
    finally:
        watcher.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app_from_env() -> FastAPI:
    """App factory for `--workers N`: each worker rebuilds settings from SERVE_* and loads the model."""
    from embedops.models import resolve

    settings = ServeSettings()
    return create_app(settings, Engine(resolve(settings.model), device=settings.device, dtype=settings.dtype))
