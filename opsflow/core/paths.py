"""Where opsflow's own files are: the project root, in a checkout or in an installed wheel.

In a checkout (``uv sync`` installs it editable) the root is the checkout itself: ``flows/``,
``tasks/``, ``blocks/``, ``deployments/`` and ``samples/`` sit beside ``opsflow/``. A wheel
(``uv build``) carries the same tree as package data under ``opsflow/_project/`` and puts that
directory on ``sys.path`` with ``opsflow-project.pth``, so ``import flows`` works the same in both
and ``opsflow apply`` finds ``deployments/prefect.yaml`` without a checkout.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

#: The ``opsflow`` package directory.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Where a wheel puts the project tree (absent in a checkout).
BUNDLED_ROOT = PACKAGE_DIR / "_project"
#: True when this code runs from an installed wheel rather than from a checkout.
INSTALLED = (BUNDLED_ROOT / "deployments" / "prefect.yaml").is_file()
#: The directory holding ``flows/``, ``tasks/``, ``blocks/``, ``deployments/`` and ``samples/``.
PROJECT_ROOT = BUNDLED_ROOT if INSTALLED else PACKAGE_DIR.parent
#: The deployments of every opsflow flow (``opsflow apply`` applies them).
PREFECT_FILE = PROJECT_ROOT / "deployments" / "prefect.yaml"
#: What a wheel's build recorded about its source (commit, repository); see :mod:`opsflow.core.version`.
BUILD_INFO_FILE = PACKAGE_DIR / "_build.json"


def code_cache_root() -> Path:
    """Where a worker keeps one clone per opsflow commit it ran (``$OPSFLOW_CODE_CACHE``, else the user's cache)."""
    if os.environ.get("OPSFLOW_CODE_CACHE"):
        return Path(os.environ["OPSFLOW_CODE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "opsflow" / "code"


#: Clones kept in the code cache besides the one in use (the most recently used ones).
CODE_CACHE_KEEP = 8


def prune_code_cache(root: Path, keep: Path, newest: int = CODE_CACHE_KEEP, min_age_s: float = 86400) -> list[Path]:
    """Remove cached clones beyond the ``newest`` most recently used that nobody used for ``min_age_s``.

    A clone a run may still be importing from was used recently, so it is never removed here.
    """
    entries = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p != keep]
    entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    removed = []
    for old in entries[newest:]:
        if time.time() - old.stat().st_mtime > min_age_s:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed
