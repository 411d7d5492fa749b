"""The OpenAPI document against the server it describes, over real HTTP with the tiny model: what the
document states (types, bounds, every status, each family's error shape), schemathesis' checks in
positive and negative modes on every route, and /docs from bundled assets."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_serve_app import run_server

from embedops.models import resolve
from embedops.serve.engine import Engine
from embedops.serve.settings import ServeSettings

KEY = "openapi-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
# max_chars 16: a text then never has more tokens than the tiny model's 64-token window, which JSON
# Schema cannot state, so a text the document allows is never refused 413 even with truncate false.
LIMITS = {"max_inputs": 4, "max_chars": 16, "max_body_bytes": 64 * 1024, "max_queue": 64}
EMBED_ROUTES = ("/embed", "/", "/v1/embeddings", "/embeddings")
# Schemathesis' statuses for refused invalid data, less 5xx, plus 413: over-long texts and too many
# inputs are 413, as the document says.
NEGATIVE_STATUSES = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine(resolve(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def url(engine: Engine) -> Iterator[str]:
    yield from run_server(ServeSettings(model=str(engine.ref.path), api_key=KEY, **LIMITS), engine)


@pytest.fixture(scope="module")
def document(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/openapi.json", headers=AUTH)
    assert response.status_code == 200
    return dict(response.json())


def operation(document: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    return dict(document["paths"][path][method])


def body_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    return dict(operation(document, path)["requestBody"]["content"]["application/json"]["schema"])


def variants(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return list(schema.get("anyOf", [schema]))


def test_document_states_the_served_models_bounds(document: dict[str, Any], engine: Engine) -> None:
    info = engine.info
    for path in ("/embed", "/", "/v1/embeddings"):
        fields = body_schema(document, path)["properties"]
        inputs = fields["inputs" if path != "/v1/embeddings" else "input"]
        text, texts, ids, many_ids = variants(inputs)
        assert text == {"type": "string", "minLength": 1, "maxLength": LIMITS["max_chars"]}
        assert texts["maxItems"] == many_ids["maxItems"] == LIMITS["max_inputs"]
        # Integers are "integer" with integer bounds (FastAPI's model would write 30521.0).
        token = ids["items"]
        assert token == {"type": "integer", "minimum": 0, "maximum": info.vocab_size - 1}
        assert type(token["maximum"]) is int
        dimensions = variants(fields["dimensions"])[0]
        assert dimensions == {"type": "integer", "minimum": 1, "maximum": info.dim}
    prompt = variants(body_schema(document, "/")["properties"]["prompt_name"])
    assert prompt == [{"type": "string", "enum": sorted(engine.prompts)}, {"type": "null"}]
    assert sorted(engine.prompts)  # the tiny model has prompts: the enum is not empty
    # With token ids a prompt cannot apply: the document says prompt_name is then null.
    assert len(body_schema(document, "/embed")["anyOf"]) == 2
    tokenize = body_schema(document, "/tokenize")["properties"]["inputs"]
    assert [v["type"] for v in variants(tokenize)] == ["string", "array"]  # texts only


def test_every_route_documents_each_status_in_its_familys_error_shape(document: dict[str, Any]) -> None:
    for path in EMBED_ROUTES:
        responses = operation(document, path)["responses"]
        assert sorted(responses) == ["200", "401", "408", "413", "415", "422", "429", "500", "503"]
        error = responses["422"]["content"]["application/json"]["schema"]
        if path.endswith("embeddings"):
            assert error["required"] == ["error"] and error["properties"]["error"]["required"][-1] == "code"
        else:
            assert error["required"] == ["error", "error_type"]
        assert "Retry-After" in responses["429"]["headers"] and "Retry-After" in responses["503"]["headers"]
        assert responses["200"]["headers"]["x-compute-tokens"]["required"] is True
    for path in ("/tokenize", "/decode"):
        assert sorted(operation(document, path)["responses"]) == ["200", "401", "408", "413", "415", "422", "429"]
    seed = operation(document, "/embed")["responses"]["200"]["content"]["application/json"]["schema"]
    assert seed["required"] == ["embeddings", "dim", "model", "usage"]
    assert operation(document, "/")["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    metrics = operation(document, "/metrics", "get")["responses"]
    assert list(metrics["200"]["content"]) == ["text/plain"] and "401" in metrics
    for probe in ("/healthz", "/readyz", "/health"):
        assert sorted(operation(document, probe, "get")["responses"]) == ["200", "503"]
        assert operation(document, probe, "get")["security"] == []  # open to orchestrators
    assert operation(document, "/v1/models", "get")["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


def test_document_follows_the_info_key_rule(url: str) -> None:
    assert httpx.get(f"{url}/openapi.json").status_code == 401  # it states the limits /info does


def test_schemathesis_finds_nothing(url: str, tmp_path: Path) -> None:
    """Every check, positive and negative data, every route, against the real server: about 800 cases in
    the coverage and fuzzing phases, 5 s on 2 cores (a fixed seed keeps runs alike)."""
    from click.testing import CliRunner
    from schemathesis.cli import schemathesis

    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[checks.positive_data_acceptance]\n"
        # 413 stays expected for valid bodies: a body over max_body_bytes, or token ids over the model's
        # window with truncate false, are refusals JSON Schema cannot state (the 413 entry says them).
        'expected-statuses = ["2xx", "413"]\n'
        "[checks.negative_data_rejection]\n"
        f"expected-statuses = {json.dumps(NEGATIVE_STATUSES)}\n"
    )
    started = time.monotonic()
    result = CliRunner().invoke(
        schemathesis,
        [
            "--config-file",
            str(config),
            "run",
            f"{url}/openapi.json",
            "--checks=all",
            "--mode=all",
            "--max-examples=25",
            "--seed=1",
            f"--header=Authorization: Bearer {KEY}",
            "--request-timeout=30",
            "--no-color",
        ],
    )
    seconds = time.monotonic() - started
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.output)
    assert result.exit_code == 0, output[-6000:]
    assert "No issues found" in output, output[-3000:]
    assert seconds < 60, seconds


def test_docs_are_served_from_bundled_assets(url: str) -> None:
    page = httpx.get(f"{url}/docs")
    assert page.status_code == 200  # open, like the probes: it holds no secret
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert assets and all(asset.startswith("/") for asset in assets), assets  # nothing from a CDN
    assert "http" not in page.text.replace("http-equiv", "")
    for asset, kind, size in (("swagger-ui-bundle.js", "javascript", 500_000), ("swagger-ui.css", "css", 50_000)):
        response = httpx.get(f"{url}/docs/assets/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert len(response.content) > size
    assert "SwaggerUIBundle" in httpx.get(f"{url}/docs/assets/swagger-ui-bundle.js").text
