"""The request bodies each route accepts and the response shapes it returns.

Requests are pydantic models validated strictly from the raw JSON (wrong types are errors, not
coerced); responses are TypedDicts because they are built from numpy arrays and serialized by orjson
directly, which a pydantic model per vector would slow down.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, GetPydanticSchema, WithJsonSchema
from pydantic_core import core_schema


def _whole(value: float) -> int:
    if not value.is_integer():
        raise ValueError("Input should be a whole number")
    return int(value)


def _integer(minimum: int) -> GetPydanticSchema:
    """An int, or a JSON number without a fraction (7379.0) made one: every value JSON Schema's "integer"
    admits, so what the OpenAPI document allows is accepted; an int stays on pydantic's fast path."""
    schema = core_schema.union_schema(
        [
            core_schema.int_schema(ge=minimum, strict=True),
            core_schema.no_info_after_validator_function(_whole, core_schema.float_schema(ge=minimum, strict=True)),
        ]
    )
    return GetPydanticSchema(lambda _type, _handler: schema)


TokenId = Annotated[int, _integer(0), WithJsonSchema({"type": "integer", "minimum": 0})]
Dimensions = Annotated[int, _integer(1), WithJsonSchema({"type": "integer", "minimum": 1})]
Text = Annotated[str, Field(min_length=1)]
TokenIds = Annotated[list[TokenId], Field(min_length=1)]
# sentence-transformers' precisions (embedops.vectors.PRECISIONS): float32, or integer codes for storage.
Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
# One text, texts, one input's token ids or several inputs' token ids: what OpenAI and TEI both accept.
Inputs = Text | Annotated[list[Text], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]


def as_inputs(raw: Any) -> list[str] | list[list[int]]:
    """A validated `Inputs` value as a list of texts or a list of token-id lists."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw[0], str):
        return list(raw)
    if isinstance(raw[0], int):
        return [list(raw)]
    return [list(ids) for ids in raw]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _TeiStrict(BaseModel):
    """TEI's requests: wrong types are errors, unknown fields are ignored (as serde does), so clients
    that add their own (LangChain's `options`) still work."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class EmbedRequest(_Strict):
    """Body of the seed's `POST /embed` and of the TEI route `POST /` (same fields, as TEI names them)."""

    inputs: Inputs
    normalize: bool | None = None
    truncate: bool | None = None
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"
    dimensions: Dimensions | None = None
    prompt_name: str | None = None
    precision: Precision = "float32"


class TeiEmbedRequest(_TeiStrict):
    """Body of TEI's `POST /` (and of `POST /embed` under `--embed-api tei`): TEI's fields and defaults."""

    inputs: Inputs
    normalize: bool = True
    truncate: bool | None = None
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"
    dimensions: Dimensions | None = None
    prompt_name: str | None = None
    precision: Precision = "float32"


class TokenizeRequest(_TeiStrict):
    """Body of TEI's `POST /tokenize`."""

    inputs: Text | Annotated[list[Text], Field(min_length=1)]
    add_special_tokens: bool = True
    prompt_name: str | None = None


class DecodeRequest(_TeiStrict):
    """Body of TEI's `POST /decode`."""

    ids: TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    skip_special_tokens: bool = True


class OpenAIEmbeddingRequest(_Strict):
    """Body of `POST /v1/embeddings`, as the OpenAI API defines it."""

    input: Inputs
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Dimensions | None = None
    user: str | None = None
    # Not OpenAI's: the SDK sends it through `extra_body`. With base64, the codes' raw bytes.
    precision: Precision = "float32"


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


class OpenAIModel(TypedDict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class OpenAIModelList(TypedDict):
    """`GET /v1/models`: the one model served, as OpenAI lists models."""

    object: Literal["list"]
    data: list[OpenAIModel]
