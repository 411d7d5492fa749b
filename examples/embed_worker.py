"""An example worker: embeds texts through the server at $EMBED_ENDPOINT, as your own workers would.

Standard library only, so it runs in any Python 3.11 image (compose.yaml runs it in python:slim).
It shows the two answers a client of embedops must handle besides 200: 429 (queue full) and 503
(warming up, or a replica shutting down), both with Retry-After, which it honours and retries.

    EMBED_ENDPOINT=http://localhost:8000/embed python examples/embed_worker.py "first text" "second text"

Prints one line per text: its width and the first values of its vector.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request

RETRYABLE = {429, 502, 503, 504}


def embed(texts: list[str], endpoint: str, *, api_key: str | None = None, attempts: int = 30) -> list[list[float]]:
    """The embeddings of `texts` from POST {endpoint}, retrying overload and warm-up answers."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = json.dumps({"inputs": texts}).encode()
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return list(json.load(response)["embeddings"])
        except urllib.error.HTTPError as exc:
            if exc.code not in RETRYABLE or attempt == attempts:
                raise
            delay = float(exc.headers.get("Retry-After") or 1)
        except urllib.error.URLError:  # not listening yet (the server container is still starting)
            if attempt == attempts:
                raise
            delay = 1.0
        time.sleep(delay)
    raise RuntimeError("unreachable")


def main(argv: list[str]) -> int:
    endpoint = os.environ.get("EMBED_ENDPOINT", "http://localhost:8000/embed")
    texts = argv or ["hello world"]
    vectors = embed(texts, endpoint, api_key=os.environ.get("EMBED_API_KEY"))
    for text, vector in zip(texts, vectors, strict=True):
        print(f"{len(vector)} {' '.join(f'{value:.4f}' for value in vector[:4])}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
