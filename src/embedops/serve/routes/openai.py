"""OpenAI's routes: `POST /v1/embeddings` (and `/embeddings`), `GET /v1/models` (and `/models`)."""

from __future__ import annotations

import base64
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from embedops.serve.errors import json_response
from embedops.serve.http import Gate, cost_headers, register_post
from embedops.serve.openapi import COUNT, EMBED_REFUSALS, TEXT, ApiDoc, json_ok, obj
from embedops.serve.routes import embed_for
from embedops.serve.schemas import OpenAIEmbeddingRequest, OpenAIEmbeddingResponse, OpenAIModelList, as_inputs
from embedops.serve.service import EmbeddingService, EmbedOptions


def register(app: FastAPI, service: EmbeddingService, gate: Gate, doc: ApiDoc) -> None:
    created = int(time.time())

    async def embeddings(request: Request) -> Response:
        started = time.perf_counter()
        body = await gate.read(request, OpenAIEmbeddingRequest)
        options = EmbedOptions(dimensions=body.dimensions, precision=body.precision)
        embedded = await embed_for(request, service, as_inputs(body.input), options)
        if body.encoding_format == "base64":
            raw = embedded.vectors if body.precision != "float32" else embedded.vectors.astype("<f4")
            rows: list[Any] = [base64.b64encode(row.tobytes()).decode() for row in raw]
        else:
            rows = list(embedded.vectors)
        content: OpenAIEmbeddingResponse = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
            "model": service.model_name,
            "usage": {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens},
        }
        return json_response(content, headers=cost_headers(embedded, started, service.info.device))

    async def models(request: Request) -> Response:
        gate.require_key(request)
        content: OpenAIModelList = {
            "object": "list",
            "data": [{"id": service.model_name, "object": "model", "created": created, "owned_by": "embedops"}],
        }
        return json_response(content)

    packed = {"type": "string", "contentEncoding": "base64"}  # little-endian float32
    item = obj(
        {"object": {"const": "embedding"}, "index": COUNT, "embedding": {"anyOf": [doc.vectors()["items"], packed]}}
    )
    listing = obj(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": item, "minItems": 1},
            "model": TEXT,
            "usage": obj({"prompt_tokens": COUNT, "total_tokens": COUNT}),
        }
    )
    embedding = doc.operation(
        "openai", doc.embedded("one embedding per input", listing), EMBED_REFUSALS, body=OpenAIEmbeddingRequest
    )
    for path in ("/v1/embeddings", "/embeddings"):
        register_post(app, path, embeddings, "Embed texts (OpenAI API)", embedding)
    model = obj({"id": TEXT, "object": {"const": "model"}, "created": COUNT, "owned_by": TEXT})
    served = json_ok(
        "the one model served", obj({"object": {"const": "list"}, "data": {"type": "array", "items": model}})
    )
    for path in ("/v1/models", "/models"):
        app.add_api_route(
            path,
            models,
            methods=["GET"],
            summary="The model served (OpenAI API)",
            openapi_extra=doc.operation("openai", served),
        )
