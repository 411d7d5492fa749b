"""Route handlers, one module per API: the seed's, OpenAI's, TEI's, and the operational routes."""

from __future__ import annotations

from embedops.serve.schemas import EmbedRequest, TeiEmbedRequest
from embedops.serve.service import EmbedOptions


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
