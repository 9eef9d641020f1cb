"""``python -m observe.healthcheck``: exit 0 while the dashboard on this host answers /healthz
(its last look at Redis is recent); for container health checks."""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("DASHBOARD_PORT", "8080")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as reply:
            return 0 if reply.status == 200 else 1
    except OSError as exc:
        print(f"dashboard unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
