"""`embedops serve`: serve a model over HTTP (seed /embed, OpenAI /v1/embeddings, TEI)."""

from __future__ import annotations

import argparse

ORDER = 50


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP",
        description="Serve a model artifact over HTTP. Every flag can also be set as SERVE_<FLAG> "
        "(e.g. SERVE_PORT=8000, SERVE_NORMALIZE=1); flags win over the environment.",
    )
    add = parser.add_argument
    add("--model", help="artifact directory, SentenceTransformer directory or hub id (default: bundled model)")
    add("--host", help="address to listen on (default 0.0.0.0)")
    add("--port", type=int, help="port (default 8000)")
    add("--device", help="cpu, cuda, cuda:1, ... (default: best available)")
    add(
        "--dtype",
        choices=["auto", "fp32", "fp16", "bf16"],
        help="torch weights dtype (default: the artifact's)",
    )
    add("--normalize", action="store_true", default=None, help="return unit-length vectors by default")
    add(
        "--auto-truncate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cut inputs longer than the model's window unless a request says otherwise (default on)",
    )
    add(
        "--concurrency",
        type=int,
        help="engine batches running at once (default: one per core up to 4 for ONNX artifacts on CPU, else 1)",
    )
    add("--batch-size", type=int, help="most inputs in one engine batch (default 32)")
    add(
        "--max-batch-tokens",
        type=int,
        help="most padded tokens in one engine batch (default 512 on CPU, 2048 on an accelerator)",
    )
    add("--max-queue", type=int, help="requests admitted at once; more get 429 (default 512)")
    add("--max-inputs", type=int, help="most inputs in one request (default 256)")
    add("--max-chars", type=int, help="most characters in one input (default 20000)")
    add("--max-body-bytes", type=int, help="largest request body (default 2 MiB)")
    add("--body-timeout", type=float, help="seconds for a request body to arrive in full, else 408 (default 30)")
    add("--api-key", help="require 'Authorization: Bearer KEY' on API routes (or SERVE_API_KEY)")
    add(
        "--api-key-file",
        metavar="PATH",
        help="read the API key from this file, so it never shows in `ps` (or SERVE_API_KEY_FILE)",
    )
    add(
        "--protect-info",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="/info and /metrics need the key too (default: on when a key is set)",
    )
    add(
        "--embed-api",
        choices=["seed", "tei"],
        help="POST /embed answers in the seed's shape (default) or TEI's bare matrix, for TEI clients",
    )
    add("--served-model-name", help="the model's name in responses (default: its hub id or folder name)")
    add("--workers", type=int, help="server processes, each with its own model copy (default 1)")
    add(
        "--graceful-timeout",
        type=int,
        help="seconds a shutdown waits for requests in flight; those still running then get 503 (default 30)",
    )
    add(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        default=None,
        help="no per-request log lines",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from embedops.errors import ConfigError
    from embedops.serve.server import serve
    from embedops.serve.settings import ServeSettings

    fields = set(ServeSettings.model_fields)
    flags = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    try:
        settings = ServeSettings(**flags)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise ConfigError(f"invalid serve settings: {problems}") from exc
    serve(settings)
    return 0
