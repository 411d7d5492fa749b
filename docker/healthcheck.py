"""HEALTHCHECK of the embedops images: exit 0 when GET /healthz answers 200, 1 otherwise.

Python's standard library only, because the slim and CUDA images carry no curl or wget. It probes
liveness, not readiness: a server still loading its model is alive (Docker should not restart it), and
/healthz turns 503 only when the model cannot run at all. The port is the server's own, SERVE_PORT.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('SERVE_PORT', '8000')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT", "2"))) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
