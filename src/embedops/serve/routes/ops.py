"""Operational routes: liveness `/healthz`, readiness `/readyz`, `/info` and Prometheus `/metrics`.

The probes stay open (a kubelet has no key); /info and /metrics need the key when one is set,
unless `--no-protect-info` opens them.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from embedops import __version__
from embedops.serve.errors import json_response
from embedops.serve.http import Gate
from embedops.serve.openapi import COUNT, RETRY_AFTER, TEXT, ApiDoc, json_ok, obj
from embedops.serve.service import EmbeddingService
from embedops.vectors import PRECISIONS


def register(app: FastAPI, service: EmbeddingService, gate: Gate, doc: ApiDoc) -> None:
    settings, info = service.settings, service.info

    def guard(request: Request) -> None:
        if settings.info_needs_key:
            gate.require_key(request)

    async def healthz() -> Response:
        if service.failed:
            return json_response({"status": "failed", "error": service.failed}, 503)
        return json_response({"status": "ok"})

    async def readyz() -> Response:
        if service.failed:
            return json_response({"status": "failed", "error": service.failed}, 503)
        if not service.ready:
            return json_response({"status": "warming up"}, 503, {"Retry-After": "1"})
        return json_response({"status": "ready"})

    async def info_route(request: Request) -> Response:
        guard(request)
        return json_response(
            {
                "model": service.model_name,
                "dim": info.dim,
                "device": info.device,
                "backend": info.backend,
                "dtype": info.dtype,
                "forward": info.forward,
                "quantization": info.quantization,
                "batch_invariant": info.batch_invariant,
                "precisions": list(PRECISIONS),
                "int8_ranges": service.ranges_source,
                "cpu": info.cpu,
                "max_seq_length": info.max_seq_length,
                "prompts": sorted(service.engine.prompts),
                "normalize": settings.normalize,
                "model_normalizes": info.model_normalizes,
                "auto_truncate": settings.auto_truncate,
                "embed_api": settings.embed_api,
                "limits": {
                    "max_inputs": settings.max_inputs,
                    "max_chars": settings.max_chars,
                    "max_body_bytes": settings.max_body_bytes,
                    "max_queue": settings.max_queue,
                    "batch_size": settings.batch_size,
                    "max_batch_tokens": service.batcher.limits.max_batch_tokens,
                    "concurrency": service.batcher.limits.concurrency,
                    "session_threads": lanes.threads if (lanes := service.engine.lanes) is not None else None,
                },
                "auth": settings.api_key is not None,
                "ready": service.ready,
                "version": __version__,
            }
        )

    async def metrics_route(request: Request) -> Response:
        guard(request)
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    failed = obj({"status": {"const": "failed"}, "error": TEXT})
    app.add_api_route(
        "/healthz",
        healthz,
        methods=["GET"],
        summary="Liveness: fails only when the model cannot run",
        openapi_extra=doc.operation(
            "tei",
            json_ok("alive", obj({"status": {"const": "ok"}})),
            keyed=False,
            other={"503": json_ok("the model cannot run here (its warm-up failed)", failed)},
        ),
    )
    waiting = {"anyOf": [failed, obj({"status": {"const": "warming up"}})]}
    app.add_api_route(
        "/readyz",
        readyz,
        methods=["GET"],
        summary="Readiness: warmed up and accepting work",
        openapi_extra=doc.operation(
            "tei",
            json_ok("ready", obj({"status": {"const": "ready"}})),
            keyed=False,
            other={"503": json_ok("warming up (retry after Retry-After), or failed", waiting, RETRY_AFTER)},
        ),
    )
    flag, name = {"type": "boolean"}, {"type": "string"}
    counted = (
        "max_inputs",
        "max_chars",
        "max_body_bytes",
        "max_queue",
        "batch_size",
        "max_batch_tokens",
        "concurrency",
    )
    # session_threads: the intra-op threads of each lane's ONNX Runtime session; null where the engine
    # was not opened for lanes (torch, an accelerator).
    limits = obj({key: COUNT for key in counted} | {"session_threads": {"type": ["integer", "null"], "minimum": 1}})
    described = obj(
        {"model": name, "dim": COUNT, "device": name, "backend": name, "dtype": name, "forward": name}
        | {"prompts": {"type": "array", "items": name}},
        {"quantization": {"type": ["object", "null"]}, "batch_invariant": flag, "cpu": name, "max_seq_length": COUNT}
        | {"normalize": flag, "model_normalizes": flag, "auto_truncate": flag, "embed_api": name, "limits": limits}
        | {"auth": flag, "ready": flag, "version": name}
        | {"precisions": {"type": "array", "items": name}, "int8_ranges": {"type": ["string", "null"]}},
    )
    app.add_api_route(
        "/info",
        info_route,
        methods=["GET"],
        summary="What is served, and under which limits",
        openapi_extra=doc.operation(
            "tei", json_ok("the model, its engine and the limits", described), keyed=doc.info_keyed
        ),
    )
    exposition = {"description": "Prometheus' text format", "content": {"text/plain": {"schema": TEXT}}}
    app.add_api_route(
        "/metrics",
        metrics_route,
        methods=["GET"],
        summary="Prometheus metrics",
        openapi_extra=doc.operation("tei", exposition, keyed=doc.info_keyed),
    )
