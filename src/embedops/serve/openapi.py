"""The OpenAPI document of one server, and `/docs` from bundled assets.

The document is built per app from the served model and the settings, so what it states is what
the server accepts: the width (`dimensions` ≤ dim), the vocabulary (token ids ≤ vocab − 1), the
model's prompt names, `--max-inputs` and `--max-chars`, and every status each route can answer
with its family's error shape. Requests are validated by the strict models in `schemas.py` (types)
and the service (these bounds); the document states both. What JSON Schema cannot say (the body's
byte size, an input's tokens beyond the model's window when `truncate` is false) is the 413 entry.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, TypeAdapter, create_model

from embedops.serve.errors import json_response
from embedops.serve.http import Gate
from embedops.serve.schemas import TokenizeRequest
from embedops.serve.service import EmbeddingService

Family = Literal["tei", "openai"]
ASSETS = "/docs/assets"
# What a POST can answer besides 200 and 401: every one is admitted (429) and reads its body (408, 413,
# 415, 422); an embedding route also runs the model (500) and can outlast a graceful shutdown (503).
BODY_REFUSALS = (408, 413, 415, 422, 429)
EMBED_REFUSALS = (*BODY_REFUSALS, 500, 503)
COUNT = {"type": "integer", "minimum": 0}
TEXT = {"type": "string"}

_TEI_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}},
    "required": ["error", "error_type"],
}
_OPENAI_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": "string"},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
    "required": ["error"],
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_COST_HEADERS = {
    name: {
        "description": what,
        "required": True,
        "schema": {"type": "string" if name == "x-compute-type" else "integer"},
    }
    for name, what in {
        "x-compute-type": "the device",
        "x-compute-time": "milliseconds in the server",
        "x-total-time": "milliseconds in the server",
        "x-tokenization-time": "milliseconds tokenizing",
        "x-queue-time": "milliseconds queued",
        "x-inference-time": "milliseconds in the model",
        "x-compute-tokens": "tokens embedded",
        "x-total-tokens": "tokens embedded",
        "x-compute-characters": "characters embedded",
    }.items()
}


class ApiDoc:
    """What one server's document states: its request bounds and each route's responses."""

    def __init__(self, service: EmbeddingService) -> None:
        settings, info = service.settings, service.info
        self.keyed = settings.api_key is not None
        self.info_keyed = settings.info_needs_key
        self.dim = info.dim
        self._refusals = {
            401: ("missing or wrong API key (`Authorization: Bearer <key>`)", {}),
            408: (f"body not received within {settings.body_timeout:g} s", {}),
            413: (
                f"body over {settings.max_body_bytes} bytes, over {settings.max_inputs} inputs, a text over "
                f"{settings.max_chars} characters, or (truncate false) an input over the model's "
                f"{info.max_seq_length}-token window",
                {},
            ),
            415: ("body not declared application/json", {}),
            422: ("invalid JSON, a wrong type, or a value the model cannot take", {}),
            429: (f"{settings.max_queue} requests already admitted: retry after Retry-After seconds", RETRY_AFTER),
            500: ("the model failed on the batch holding this request (engine_error)", {}),
            503: ("the server is shutting down and could not finish in time: retry elsewhere", RETRY_AFTER),
        }
        text = Annotated[str, Field(min_length=1, max_length=settings.max_chars)]
        texts = text | Annotated[list[text], Field(min_length=1, max_length=settings.max_inputs)]
        token = Annotated[int, Field(ge=0, le=info.vocab_size - 1)]
        ids = Annotated[list[token], Field(min_length=1)]
        many_ids = Annotated[list[ids], Field(min_length=1, max_length=settings.max_inputs)]
        prompts = tuple(sorted(service.engine.prompts))
        self._fields: dict[str, Any] = {
            "inputs": texts | ids | many_ids,
            "input": texts | ids | many_ids,
            "ids": ids | many_ids,
            "dimensions": Annotated[int, Field(ge=1, le=info.dim)] | None,
            # The model's own prompt names, or null alone for a model without prompts.
            "prompt_name": Literal[prompts] | None if prompts else None,
        }
        self._texts = texts
        self._texts_schema = TypeAdapter(texts).json_schema()
        self._prompts = prompts

    def request(self, model: type[BaseModel]) -> dict[str, Any]:
        """`model`'s JSON schema with this server's bounds: its strictness and fields, narrowed."""
        bounds = {**self._fields, "inputs": self._texts} if model is TokenizeRequest else self._fields
        narrowed: dict[str, Any] = {
            name: (bounds[name], ... if field.is_required() else field.default)
            for name, field in model.model_fields.items()
            if name in bounds
        }
        specialised = create_model(model.__name__, __base__=model, __doc__=model.__doc__, **narrowed)
        schema = specialised.model_json_schema()
        if self._prompts and {"inputs", "prompt_name"} <= narrowed.keys() and model is not TokenizeRequest:
            # A prompt is put before texts: with token ids, prompt_name must be null or absent.
            schema["anyOf"] = [
                {"properties": {"inputs": self._texts_schema}},
                {"properties": {"prompt_name": {"type": "null"}}},
            ]
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    def operation(
        self,
        family: Family,
        ok: dict[str, Any],
        refusals: tuple[int, ...] = (),
        *,
        body: type[BaseModel] | None = None,
        keyed: bool | None = None,
        other: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An operation's `openapi_extra`: its 200, each refusal in its family's error shape, its key,
        and `other` responses of its own (a probe's 503)."""
        keyed = self.keyed if keyed is None else keyed
        error = _OPENAI_ERROR if family == "openai" else _TEI_ERROR
        responses: dict[str, Any] = {"200": ok}
        for status in sorted({*refusals, *((401,) if keyed else ())}):
            description, headers = self._refusals[status]
            responses[str(status)] = {
                "description": description,
                "content": {"application/json": {"schema": error}},
                **({"headers": headers} if headers else {}),
            }
        responses.update(other or {})
        extra: dict[str, Any] = {"responses": responses, "security": [{"bearer": []}] if keyed else []}
        if body is not None:
            extra["requestBody"] = self.request(body)
        return extra

    def embedded(self, description: str, schema: dict[str, Any]) -> dict[str, Any]:
        """The 200 of an embedding route: its body, and TEI's cost headers."""
        return {**json_ok(description, schema), "headers": _COST_HEADERS}

    def vectors(self) -> dict[str, Any]:
        """Rows of floats, as wide as the model or as `dimensions` asked."""
        row = {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": self.dim}
        return {"type": "array", "items": row, "minItems": 1}


def json_ok(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A documented JSON response (any status)."""
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **({"headers": headers} if headers else {}),
    }


def obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON object schema with these required and optional properties."""
    return {"type": "object", "properties": {**required, **(optional or {})}, "required": list(required)}


def install(app: FastAPI, doc: ApiDoc, gate: Gate) -> None:
    """`/openapi.json` (under /info's key rule: it states the same limits) and `/docs`, whose Swagger UI
    comes from the `fastapi-offline` wheel rather than a CDN, so it works on a machine with no internet."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            # FastAPI passes each operation through its OpenAPI model, which writes integer bounds as
            # floats (`"maximum": 30521.0`); the operations are put back exactly as the routes state them.
            for route in app.routes:
                if isinstance(route, APIRoute) and route.include_in_schema and route.openapi_extra:
                    for method in route.methods or ():
                        schema["paths"][route.path][method.lower()].update(route.openapi_extra)
            if doc.keyed:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"}
                }
            app.openapi_schema = schema
        return app.openapi_schema

    async def openapi_route(request: Request) -> Response:
        if doc.info_keyed:
            gate.require_key(request)
        return json_response(document())

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )

    app.openapi = document  # type: ignore[method-assign]
    app.add_api_route("/openapi.json", openapi_route, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")
