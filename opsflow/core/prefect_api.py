"""The Prefect REST API over plain httpx, authenticated as Prefect's own client is, for the few
calls where Prefect 3.8's client waits far too long.

Prefect's client answers a 503 by sleeping ``2**n`` seconds (2 s, 4 s, ...) before it looks at its
retry budget, so it sleeps 2 s even with retries turned off. The webhook receiver creates runs
through this client instead and retries timeouts and 5xx answers itself, within a deadline
(opsflow.core.waits).
"""

from __future__ import annotations

import base64

import httpx

from opsflow.core.errors import RemoteError


def api_client(timeout: float = 10) -> httpx.Client:
    """An httpx client on ``PREFECT_API_URL`` with Prefect's auth (``PREFECT_API_AUTH_STRING`` as
    basic auth, else ``PREFECT_API_KEY`` as a bearer token). Raises RemoteError when no API URL is set."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_REQUEST_TIMEOUT, PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise RemoteError("PREFECT_API_URL is not set; point it at the Prefect server's /api")
    headers = {}
    if PREFECT_API_AUTH_STRING.value():
        headers["Authorization"] = "Basic " + base64.b64encode(PREFECT_API_AUTH_STRING.value().encode()).decode()
    elif PREFECT_API_KEY.value():
        headers["Authorization"] = f"Bearer {PREFECT_API_KEY.value()}"
    return httpx.Client(base_url=PREFECT_API_URL.value().rstrip("/") + "/", headers=headers,
                        timeout=min(PREFECT_API_REQUEST_TIMEOUT.value(), timeout))
