"""The FastAPI app: one embedding service, the routes of each API around it, errors mapped in one place.

APIs: the seed's `POST /embed`; OpenAI's `/v1/embeddings`, `/embeddings`, `/v1/models`, `/models`;
TEI's `POST /` (what huggingface_hub's InferenceClient posts to), `/tokenize`, `/decode`, `/health`
(and `/embed` under `--embed-api tei`); operations: `/healthz`, `/readyz`, `/info`, `/metrics`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from embedops import __version__
from embedops.errors import EmbedopsError, RequestError
from embedops.serve.admission import AdmissionMiddleware, Places
from embedops.serve.engine import Engine
from embedops.serve.errors import error_response
from embedops.serve.http import Gate
from embedops.serve.metrics import ServeMetrics
from embedops.serve.middleware import ObservabilityMiddleware
from embedops.serve.openapi import ApiDoc, install
from embedops.serve.routes import openai, ops, seed, tei
from embedops.serve.service import EmbeddingService
from embedops.serve.settings import ServeSettings

if TYPE_CHECKING:
    from embedops.models import ModelRef

logger = logging.getLogger("embedops.serve")


def create_app(settings: ServeSettings, engine: Engine) -> FastAPI:
    """The server for one loaded engine; `settings` carries every limit and default."""
    metrics = ServeMetrics()
    service = EmbeddingService(settings, engine, metrics)
    batcher = service.batcher

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, ServeMetrics]]:
        batcher.start()
        warmup = asyncio.create_task(_warm_up(service))
        yield {"metrics": metrics}  # the lifespan state: uvicorn hands it to the protocol (serve/protocol.py)
        warmup.cancel()
        await batcher.close()

    app = FastAPI(
        title="embedops", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    # Starlette runs the last middleware added first: observability sees every response, 429s included.
    app.add_middleware(AdmissionMiddleware, places=Places(settings.max_queue, metrics), metrics=metrics)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, access_log=settings.access_log)
    gate = Gate(settings)
    doc = ApiDoc(service)
    if settings.embed_api == "seed":
        seed.register(app, service, gate, doc)
    tei.register(app, service, gate, doc)
    openai.register(app, service, gate, doc)
    ops.register(app, service, gate, doc)
    install(app, doc, gate)

    @app.exception_handler(EmbedopsError)
    async def embedops_error(request: Request, exc: EmbedopsError) -> Response:
        return error_response(request, exc, metrics)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else "method_not_allowed"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        error = RequestError(message, status=exc.status_code, code=code)
        return error_response(request, error, metrics, exc.headers)  # 405 keeps its Allow header

    app.state.batcher = batcher
    app.state.metrics = metrics
    return app


async def _warm_up(service: EmbeddingService) -> None:
    """Run the model once before turning ready; a model that cannot run here says why on every probe."""
    if service.settings.warmup:
        try:
            await asyncio.to_thread(service.engine.warmup)
        except Exception as exc:
            logger.exception("warm-up failed; the server will not turn ready")
            service.failed = f"warm-up failed: {type(exc).__name__}: {exc}"
            return
    service.ready = True
    info = service.info
    logger.info("ready: %s (%s, %s, %s, dim %d)", service.model_name, info.backend, info.dtype, info.forward, info.dim)


def serving_engine(settings: ServeSettings, ref: ModelRef) -> Engine:
    """The engine a server runs: an ONNX artifact on a CPU opened for the lanes of serve/lanes.py."""
    from embedops.serve.lanes import cpu_lanes

    return Engine(
        ref, device=settings.device, dtype=settings.dtype, lanes=cpu_lanes(settings.concurrency, settings.workers)
    )


def create_app_from_env() -> FastAPI:
    """App factory for `--workers N`: each worker rebuilds settings from SERVE_* and loads the model."""
    from embedops.models import resolve

    settings = ServeSettings()
    return create_app(settings, serving_engine(settings, resolve(settings.model)))
