"""Files on disk: how much a directory holds."""

from __future__ import annotations

import contextlib
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
