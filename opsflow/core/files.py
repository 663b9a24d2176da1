"""Files on disk: how much a directory holds."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def directory_bytes(root: Path) -> int:
    """Bytes in the regular files under ``root`` (symlinks not followed; 0 when it does not exist).

    Files that vanish while the tree is walked (a tool moving its temporary files) are skipped.
    """
    total = 0
    for path in root.rglob("*") if root.exists() else ():
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


def read_or_create_private(path: Path, make) -> str:
    """The text of ``path``, or, when it does not exist yet, ``make()`` written to it first with mode 0600.

    Created exclusively (``O_EXCL``): of two processes creating it at once, the loser reads the winner's.
    For generated secrets (passwords, keys) that must never be readable by others.
    """
    try:
        return path.read_text()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = make()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text()
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return text
