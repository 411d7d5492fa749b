"""text-embeddings-inference's routes, in its shapes: `POST /` (and `POST /embed` under
`--embed-api tei`) answering a bare matrix, `POST /tokenize`, `POST /decode` and `GET /health`."""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI, Request
from fastapi.responses import Response

from embedops.serve.errors import json_response
from embedops.serve.http import Gate, cost_headers, register_post
from embedops.serve.openapi import BODY_REFUSALS, COUNT, EMBED_REFUSALS, TEXT, ApiDoc, json_ok, obj
from embedops.serve.routes import embed_for, embed_options
from embedops.serve.schemas import DecodeRequest, TeiEmbedRequest, TokenizeRequest, as_inputs
from embedops.serve.service import EmbeddingService


def register(app: FastAPI, service: EmbeddingService, gate: Gate, doc: ApiDoc) -> None:
    async def embed(request: Request) -> Response:
        started = time.perf_counter()
        body = await gate.read(request, TeiEmbedRequest)
        embedded = await embed_for(request, service, as_inputs(body.inputs), embed_options(body))
        return json_response(embedded.vectors, headers=cost_headers(embedded, started, service.info.device))

    async def tokenize(request: Request) -> Response:
        body = await gate.read(request, TokenizeRequest)
        texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
        tokens = await asyncio.to_thread(
            service.tokens, texts, add_special_tokens=body.add_special_tokens, prompt_name=body.prompt_name
        )
        return json_response([[token._asdict() for token in row] for row in tokens])

    async def decode(request: Request) -> Response:
        body = await gate.read(request, DecodeRequest)
        batch = [list(body.ids)] if isinstance(body.ids[0], int) else [list(ids) for ids in body.ids]
        return json_response(service.decode(batch, skip_special_tokens=body.skip_special_tokens))

    async def health() -> Response:
        if service.failed:
            return json_response({"error": service.failed, "error_type": "unhealthy"}, 503)
        return Response(status_code=200)

    ok = doc.embedded("one vector per input, as a bare matrix", doc.vectors())
    embedding = doc.operation("tei", ok, EMBED_REFUSALS, body=TeiEmbedRequest)
    for path in ("/", "/embed") if service.settings.embed_api == "tei" else ("/",):
        register_post(app, path, embed, "Embed texts (text-embeddings-inference API)", embedding)
    span = {"type": ["integer", "null"], "minimum": 0}
    token = obj({"id": COUNT, "text": TEXT, "special": {"type": "boolean"}, "start": span, "stop": span})
    tokens = json_ok(
        "each input's tokens, with UTF-8 byte spans", {"type": "array", "items": {"type": "array", "items": token}}
    )
    summary = "Tokens of texts, with their spans (text-embeddings-inference API)"
    register_post(
        app, "/tokenize", tokenize, summary, doc.operation("tei", tokens, BODY_REFUSALS, body=TokenizeRequest)
    )
    texts = json_ok("one text per list of ids", {"type": "array", "items": TEXT, "minItems": 1})
    decoding = doc.operation("tei", texts, BODY_REFUSALS, body=DecodeRequest)
    register_post(app, "/decode", decode, "Texts of token ids (text-embeddings-inference API)", decoding)
    unhealthy = {
        "503": json_ok("the model cannot run here (its warm-up failed)", obj({"error": TEXT, "error_type": TEXT}))
    }
    app.add_api_route(
        "/health",
        health,
        methods=["GET"],
        summary="Health, as text-embeddings-inference answers it",
        openapi_extra=doc.operation("tei", {"description": "healthy (empty body)"}, keyed=False, other=unhealthy),
    )
