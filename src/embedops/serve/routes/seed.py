"""The seed's `POST /embed`: `{"inputs": [...]}` in, `{"embeddings", "dim", "model", "usage"}` out."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from fastapi.responses import Response

from embedops.serve.errors import json_response
from embedops.serve.http import Gate, cost_headers, register_post
from embedops.serve.openapi import COUNT, EMBED_REFUSALS, TEXT, ApiDoc, obj
from embedops.serve.routes import embed_for, embed_options
from embedops.serve.schemas import EmbedRequest, SeedEmbedResponse, as_inputs
from embedops.serve.service import EmbeddingService


def register(app: FastAPI, service: EmbeddingService, gate: Gate, doc: ApiDoc) -> None:
    async def embed(request: Request) -> Response:
        started = time.perf_counter()
        body = await gate.read(request, EmbedRequest)
        embedded = await embed_for(request, service, as_inputs(body.inputs), embed_options(body))
        content: SeedEmbedResponse = {
            "embeddings": embedded.vectors,
            "dim": embedded.width,
            "model": service.model_name,
            "usage": {"tokens": embedded.tokens},
        }
        return json_response(content, headers=cost_headers(embedded, started, service.info.device))

    shape = obj(
        {
            "embeddings": doc.vectors(),
            "dim": {"type": "integer", "minimum": 1, "maximum": doc.dim},
            "model": TEXT,
            "usage": obj({"tokens": COUNT}),
        }
    )
    ok = doc.embedded("one vector per input, their width, the model's name and the tokens embedded", shape)
    operation = doc.operation("tei", ok, EMBED_REFUSALS, body=EmbedRequest)
    register_post(app, "/embed", embed, "Embed texts (the seed's API)", operation)
