"""The Prefect REST API over plain httpx, authenticated as Prefect's own client is, for the few
calls where Prefect 3.8's client waits far too long.

On a SQLite-backed server, a write transaction that lost a race with another write (SQLite's
``BUSY_SNAPSHOT``) is answered with 503; Prefect's client then sleeps ``2**n`` seconds (2 s, 4 s,
...) before it looks at its retry budget, so it sleeps 2 s even with retries turned off. Creating
a run from a webhook and taking a deploy lock retry such answers here after 0.1-2 s instead.
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Sequence

import httpx

from opsflow.core.errors import RemoteError

#: Waits between attempts after a 5xx answer; ``None`` ends the attempts.
SERVER_BUSY_RETRIES_S: Sequence[float | None] = (0.1, 0.3, 0.6, 1.0, 2.0, None)


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


def post_busy_retried(client: httpx.Client, path: str, json: dict,
                      delays: Sequence[float | None] = SERVER_BUSY_RETRIES_S) -> httpx.Response:
    """POST, retrying 5xx answers (the server rolled the transaction back) after the short
    ``delays``, with a little jitter so concurrent callers do not collide again; returns the last
    response, whatever its status. A connection error is raised as it is: the request may have
    been carried out, so only the caller knows whether sending it again is safe."""
    for delay in delays:
        resp = client.post(path, json=json)
        if resp.status_code < 500 or delay is None:
            return resp
        time.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not a secret
    raise AssertionError("delays must end with None")
