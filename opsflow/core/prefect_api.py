"""The Prefect REST API over plain httpx, authenticated as Prefect's own client is, for the few
calls where Prefect 3.8's client waits far too long; and the client settings of a local stack.

On a SQLite-backed server, a write transaction that lost a race with another write (SQLite's
``BUSY_SNAPSHOT``) is answered with 503; Prefect's client then sleeps ``2**n`` seconds (2 s, 4 s,
...) before it looks at its retry budget, so it sleeps 2 s even with retries turned off. Creating
a run from a webhook and taking a deploy lock retry such answers here after 0.1-2 s instead.
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from opsflow.core.errors import RemoteError

#: Under a stack's home: the Prefect server's shared credential (mode 0600) and the stack's state (its ports).
#: Defined here, in the ground, so a client finds its stack before Prefect or the stack package is imported.
AUTH_FILE = "prefect-auth"
STATE_FILE = "stack.json"
DEFAULT_HOME = ".opsflow"
DEFAULT_PREFECT_PORT = 4200

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
        headers.update(basic_auth_header(PREFECT_API_AUTH_STRING.value()))
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


def basic_auth_header(auth_string: str) -> dict[str, str]:
    """The ``Authorization`` header a Prefect server started with ``PREFECT_SERVER_API_AUTH_STRING`` expects."""
    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


def ensure_auth_string(path: Path) -> str:
    """The auth string kept in ``path`` (mode 0600), created on first use as ``opsflow:<random>``.

    Two processes creating it at once agree: the file is created exclusively and the loser reads it.
    """
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    if text:
        return text
    path.parent.mkdir(parents=True, exist_ok=True)
    value = f"opsflow:{secrets.token_urlsafe(32)}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def local_stack_env(environ: Mapping[str, str] | None = None, home: Path | None = None) -> dict[str, str]:
    """``PREFECT_API_URL`` and ``PREFECT_API_AUTH_STRING`` of the local stack (``opsflow stack up``).

    The home is ``home``, else ``$OPSFLOW_HOME``, else ``.opsflow``; the port is the one the stack runs
    with (its state file), else ``$OPSFLOW_PREFECT_PORT``, else 4200. The auth string is created when
    the stack has none yet, so a stack started afterwards uses the same one.
    """
    env = os.environ if environ is None else environ
    root = Path(home or env.get("OPSFLOW_HOME") or DEFAULT_HOME).absolute()
    port = int(env.get("OPSFLOW_PREFECT_PORT") or DEFAULT_PREFECT_PORT)
    try:
        port = int(json.loads((root / STATE_FILE).read_text())["ports"]["prefect_port"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {"PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_API_AUTH_STRING": ensure_auth_string(root / AUTH_FILE)}


def use_local_stack(home: Path | None = None) -> dict[str, str]:
    """Point this process's Prefect client at the local stack: its API URL and auth string go into the
    environment. Call it before Prefect is imported (Prefect reads its settings once, at import);
    otherwise a flow called here would start a temporary server of its own. Returns what was set."""
    found = local_stack_env(home=home)
    os.environ.update(found)
    return found
