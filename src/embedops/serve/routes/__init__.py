"""Route handlers, one module per API: the seed's, OpenAI's, TEI's, and the operational routes."""

from __future__ import annotations

from fastapi import Request

from embedops.serve.http import disconnected
from embedops.serve.schemas import EmbedRequest, TeiEmbedRequest
from embedops.serve.service import Embedded, EmbeddingService, EmbedOptions


async def embed_for(
    request: Request, service: EmbeddingService, inputs: list[str] | list[list[int]], options: EmbedOptions
) -> Embedded:
    """What every embedding route does between reading its body and shaping its answer: embed (dropped
    if the client hangs up) and note inputs and tokens for the access log."""
    embedded = await service.embed(inputs, options, lambda: disconnected(request))
    request.state.access = {"inputs": len(embedded.vectors), "tokens": embedded.tokens}
    return embedded


def embed_options(body: EmbedRequest | TeiEmbedRequest) -> EmbedOptions:
    """The options of the seed's and TEI's embed bodies, which share TEI's field names."""
    return EmbedOptions(
        normalize=body.normalize,
        truncate=body.truncate,
        left=body.truncation_direction.lower() == "left",
        dimensions=body.dimensions,
        prompt_name=body.prompt_name,
        precision=body.precision,
    )
