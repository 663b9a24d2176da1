"""Checking that a delivery was signed with the webhook secret (constant-time comparisons only)."""

from __future__ import annotations

import hashlib
import hmac

KINDS = ("github", "gitea", "gitlab")


def _hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(kind: str, headers: dict[str, str], body: bytes, secret: str) -> bool:
    """Whether ``body`` carries a valid signature for ``kind`` (headers keyed in lower case).

    GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256>``; Gitea: ``X-Gitea-Signature: <hex
    HMAC-SHA256>``; GitLab: ``X-Gitlab-Token: <the secret itself>``.
    """
    if not secret:
        return False
    if kind == "github":
        given = headers.get("x-hub-signature-256", "")
        return given.startswith("sha256=") and hmac.compare_digest(given[7:].lower(), _hmac_hex(secret, body))
    if kind == "gitea":
        given = headers.get("x-gitea-signature", "")
        return bool(given) and hmac.compare_digest(given.lower(), _hmac_hex(secret, body))
    if kind == "gitlab":
        given = headers.get("x-gitlab-token", "")
        return bool(given) and hmac.compare_digest(given.encode(), secret.encode())
    return False
