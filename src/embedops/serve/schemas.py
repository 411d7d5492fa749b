"""The request bodies each route accepts and the response shapes it returns.

Requests are pydantic models validated strictly from the raw JSON (wrong types are errors, not
coerced); responses are TypedDicts because they are built from numpy arrays and serialized by orjson
directly, which a pydantic model per vector would slow down.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

Text = Annotated[str, Field(min_length=1)]
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
Dimensions = Annotated[int, Field(ge=1)]
# One text, texts, one input's token ids or several inputs' token ids: what OpenAI and TEI both accept.
Inputs = Text | Annotated[list[Text], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class EmbedRequest(_Strict):
    """Body of the seed's `POST /embed` and of the TEI route `POST /` (same fields, as TEI names them)."""

    inputs: Inputs
    normalize: bool | None = None
    truncate: bool | None = None
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"
    dimensions: Dimensions | None = None
    prompt_name: str | None = None


class OpenAIEmbeddingRequest(_Strict):
    """Body of `POST /v1/embeddings`, as the OpenAI API defines it."""

    input: Inputs
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Dimensions | None = None
    user: str | None = None


class SeedUsage(TypedDict):
    tokens: int


class SeedEmbedResponse(TypedDict):
    """`POST /embed`: the seed's response, with the model and token usage added."""

    embeddings: object  # float32 array, rows x dim
    dim: int
    model: str
    usage: SeedUsage


class OpenAIEmbedding(TypedDict):
    object: Literal["embedding"]
    index: int
    embedding: object  # list of floats, or base64 of little-endian float32


class OpenAIUsage(TypedDict):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingResponse(TypedDict):
    object: Literal["list"]
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class OpenAIErrorBody(TypedDict):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIError(TypedDict):
    """OpenAI's error envelope, which its SDKs parse into typed exceptions."""

    error: OpenAIErrorBody


class ErrorResponse(TypedDict):
    """Error body of every other route, as text-embeddings-inference returns it."""

    error: str
    error_type: str
