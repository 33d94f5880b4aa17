"""The container's HEALTHCHECK: exit 0 when this node's /livez answers 200, else 1 (standard library only).

/livez is asked on the metrics port (MESH_METRICS_PORT, plain HTTP, no client certificate needed), or on the MESH
port when there is none. It reports the process alone, so a database outage marks no container unhealthy.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 3.0


def livez_url(environ: dict[str, str]) -> str:
    metrics_port = environ.get("MESH_METRICS_PORT", "")
    if metrics_port not in ("", "0"):
        return f"http://127.0.0.1:{metrics_port}/livez"
    scheme = "https" if environ.get("MESH_TLS_CERT") else "http"
    return f"{scheme}://127.0.0.1:{environ.get('MESH_PORT', '8700')}/livez"


def main() -> int:
    url = livez_url(dict(os.environ))
    # The node's own certificate names its public host, not 127.0.0.1: liveness is not the place to verify it.
    context = ssl._create_unverified_context() if url.startswith("https") else None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(url, timeout=TIMEOUT_SECONDS) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
