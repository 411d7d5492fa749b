"""OpenAI's routes: `POST /v1/embeddings` (and `/embeddings`), `GET /v1/models` (and `/models`)."""

from __future__ import annotations

import base64
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from embedops.serve.errors import json_response
from embedops.serve.http import Gate, cost_headers, disconnected, register_post
from embedops.serve.schemas import OpenAIEmbeddingRequest, OpenAIEmbeddingResponse, OpenAIModelList, as_inputs
from embedops.serve.service import EmbeddingService, EmbedOptions


def register(app: FastAPI, service: EmbeddingService, gate: Gate) -> None:
    created = int(time.time())

    async def embeddings(request: Request) -> Response:
        started = time.perf_counter()
        body = await gate.read(request, OpenAIEmbeddingRequest)
        options = EmbedOptions(dimensions=body.dimensions)
        embedded = await service.embed(as_inputs(body.input), options, lambda: disconnected(request))
        request.state.access = {"inputs": len(embedded.vectors), "tokens": embedded.tokens}
        if body.encoding_format == "base64":
            rows: list[Any] = [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in embedded.vectors]
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

    for path in ("/v1/embeddings", "/embeddings"):
        register_post(app, path, embeddings, "Embed texts (OpenAI API)", OpenAIEmbeddingRequest)
    for path in ("/v1/models", "/models"):
        app.add_api_route(path, models, methods=["GET"], summary="The model served (OpenAI API)")
