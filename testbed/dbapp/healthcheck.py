"""The image's HEALTHCHECK: exit 0 when GET /health answers 200, else 1 (stdlib only)."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

URL = f"http://127.0.0.1:{os.environ.get('APP_PORT', '8080')}/health"

try:
    with urllib.request.urlopen(URL, timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except (urllib.error.URLError, OSError) as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
