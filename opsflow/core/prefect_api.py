"""The Prefect REST API over plain httpx, authenticated as Prefect's own client is, for the few
calls where Prefect 3.8's client waits far too long; and the client settings of a local stack.

Prefect's client answers a 503 by sleeping ``2**n`` seconds (2 s, 4 s, ...) before it looks at its
retry budget, so it sleeps 2 s even with retries turned off. The webhook receiver creates runs
through this client instead and retries timeouts and 5xx answers itself, within a deadline
(opsflow.core.waits).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import httpx

from opsflow.core.errors import RemoteError
from opsflow.core.files import read_or_create_private

#: Under a stack's home: the Prefect server's shared credential (mode 0600) and the stack's state (its ports).
#: Defined here, in the ground, so a client finds its stack before Prefect or the stack package is imported.
AUTH_FILE = "prefect-auth"
STATE_FILE = "stack.json"
DEFAULT_HOME = ".opsflow"
DEFAULT_PREFECT_PORT = 4200

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


def basic_auth_header(auth_string: str) -> dict[str, str]:
    """The ``Authorization`` header a Prefect server started with ``PREFECT_SERVER_API_AUTH_STRING`` expects."""
    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


def ensure_auth_string(path: Path) -> str:
    """The auth string kept in ``path`` (mode 0600), created on first use as ``opsflow:<random>``.

    Two processes creating it at once agree: the file is created exclusively and the loser reads it.
    """
    return read_or_create_private(path, lambda: f"opsflow:{secrets.token_urlsafe(32)}\n").strip()


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
