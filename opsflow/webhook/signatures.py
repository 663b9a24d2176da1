"""Checking that a delivery was signed with the webhook secret (constant-time comparisons only, pure)."""

from __future__ import annotations

import hashlib
import hmac

KINDS = ("github", "gitea", "gitlab")
SIGNATURE_HEADERS = {"github": "x-hub-signature-256", "gitea": "x-gitea-signature", "gitlab": "x-gitlab-token"}


def _header_bytes(value: str) -> bytes:
    # http.server decodes header bytes as latin-1: encoding back gives the bytes the forge sent, and
    # comparing bytes means no value can make compare_digest raise (it refuses non-ASCII str).
    return value.encode("latin-1", "replace")


def sign(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``body`` under ``secret`` (what GitHub and Gitea send)."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(kind: str, headers: dict[str, str], body: bytes, secret: str) -> bool:
    """Whether ``body`` carries a valid signature for ``kind`` (headers keyed in lower case).

    GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256>``; Gitea: ``X-Gitea-Signature: <hex
    HMAC-SHA256>``; GitLab: ``X-Gitlab-Token: <the secret itself>``. An empty secret verifies nothing.
    """
    if not secret or kind not in SIGNATURE_HEADERS:
        return False
    given = headers.get(SIGNATURE_HEADERS[kind], "")
    if not given:
        return False
    if kind == "gitlab":
        return hmac.compare_digest(_header_bytes(given), secret.encode())
    if kind == "github":
        if not given.startswith("sha256="):
            return False
        given = given[7:]
    return hmac.compare_digest(_header_bytes(given.lower()), sign(secret, body).encode())
