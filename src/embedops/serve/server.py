"""Run the app under uvicorn: one process with the engine loaded here, or N workers that each load it."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
from typing import Any

from embedops.serve.protocol import GuardedHttpToolsProtocol
from embedops.serve.settings import ServeSettings

logger = logging.getLogger("embedops.serve")


def serve(settings: ServeSettings) -> None:
    """Block serving HTTP until SIGINT/SIGTERM; in-flight requests are drained before exit."""
    import uvicorn

    from embedops.models import resolve

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    ref = resolve(settings.model)  # a wrong model fails here, before any port is taken
    options: dict[str, Any] = {  # uvicorn.Config's keyword arguments
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": GuardedHttpToolsProtocol,
        "access_log": False,
        "timeout_graceful_shutdown": settings.graceful_timeout,
        "log_level": "info",
    }
    if settings.workers > 1:
        logger.info("listening on %s (%d workers)", _url(settings.host, settings.port), settings.workers)
        _serve_workers(settings, options)
        return
    # Listen before loading the model: clients that connect during the load wait in the kernel's
    # backlog and are answered once it is done, instead of being refused (`serve & sleep 5; curl`).
    listener = _listen(settings.host, settings.port)
    logger.info("listening on %s; loading %s", _url(*listener.getsockname()[:2]), ref.reference)
    from embedops.serve.app import create_app, serving_engine

    engine = serving_engine(settings, ref)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, engine), **options))
    server.run(sockets=[listener])


def _serve_workers(settings: ServeSettings, options: dict[str, Any]) -> None:
    """N uvicorn worker processes, each with its own engine; /metrics adds up all of them."""
    import uvicorn

    from embedops.serve.metrics import MULTIPROCESS_DIR

    # Workers are fresh processes: they read the same settings back from SERVE_* variables, and the
    # metrics directory from the environment before prometheus-client is first imported there.
    os.environ.update(settings.to_env())
    directory = tempfile.mkdtemp(prefix="embedops-metrics-")
    os.environ[MULTIPROCESS_DIR] = directory
    try:
        uvicorn.run("embedops.serve.app:create_app_from_env", factory=True, workers=settings.workers, **options)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        from embedops.errors import ConfigError

        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


def _url(host: str, port: int) -> str:
    """Where clients reach the server; a wildcard address is shown as this machine's loopback."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}" + (f" (all interfaces, {host})" if host in ("0.0.0.0", "::") else "")
