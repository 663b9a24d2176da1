"""Removing a run's working directories once the run is done with them."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from prefect import get_run_logger, task

from opsflow.core.errors import InvalidInput


@task(name="cleanup-workspace", task_run_name="cleanup-workspace")
def cleanup_workspace(paths: list[Path], dry_run: bool = False) -> list[str]:
    """Delete the given run directories (only ones under the temp dir); return what was (or would be) removed."""
    logger = get_run_logger()
    root = Path(tempfile.gettempdir()).resolve()
    removed = []
    for path in map(Path, paths):
        resolved = path.resolve()
        if root not in resolved.parents:
            raise InvalidInput(f"refusing to delete {path}: workspaces live under {root}")
        if not resolved.exists():
            continue
        if dry_run:
            logger.info("dry run: would remove %s", resolved)
        else:
            shutil.rmtree(resolved)
            logger.info("removed %s", resolved)
        removed.append(str(resolved))
    return removed
