"""A live embedding endpoint as an encoder, so `embedops eval` can score a running server.

Speaks the server's own `POST /embed` (and any seed-compatible endpoint). Imports no server code.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

import httpx
import numpy as np

from embedops.errors import ConfigError


class EndpointEncoder:
    """`encode(texts, batch_size)` by posting batches to an `/embed` URL (embedops' or TEI's); retries 429
    and 503 politely."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 120.0, retries: int = 5) -> None:
        base = url.rstrip("/")
        self.url = base if base.endswith("/embed") else f"{base}/embed"
        self.name = url
        self.retries = retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embeddings of `texts`, one float32 row each, in order."""
        rows = [self._post(list(texts[start : start + batch_size])) for start in range(0, len(texts), batch_size)]
        return np.vstack(rows) if rows else np.empty((0, 0), np.float32)

    def _post(self, batch: list[str]) -> np.ndarray:
        for attempt in itertools.count():
            try:
                response = self._client.post(self.url, json={"inputs": batch})
            except httpx.HTTPError as exc:
                raise ConfigError(f"embedding endpoint {self.url} cannot be reached: {exc}") from exc
            if response.status_code in (429, 503) and attempt < self.retries:
                time.sleep(float(response.headers.get("retry-after", 1)))
                continue
            if response.status_code != 200:
                raise ConfigError(
                    f"embedding endpoint {self.url} answered {response.status_code}: {response.text[:300]}"
                )
            body = response.json()
            # The seed's object, or TEI's bare matrix (a TEI server, or ours under --embed-api tei).
            return np.asarray(body if isinstance(body, list) else body["embeddings"], dtype=np.float32)
        raise AssertionError("unreachable: itertools.count() never ends")

    def close(self) -> None:
        self._client.close()
