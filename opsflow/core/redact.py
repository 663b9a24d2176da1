"""Removing secret values from text before it reaches a log, an exception or an artifact."""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every non-trivial secret value replaced by ``***``.

    Longer secrets are replaced first so that a secret containing another is fully masked.
    Values shorter than 4 characters are ignored: masking them would shred ordinary output.
    """
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
