"""The registry's garbage collection after a cleanup, and the bytes it freed."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from blocks import ContainerRegistry
from opsflow.core.files import directory_bytes
from opsflow.core.proc import run


@task(name="collect-registry-garbage", task_run_name="collect-registry-garbage")
def collect_registry_garbage(registry: ContainerRegistry) -> int | None:
    """Run the registry's garbage collection (its ``gc_command``, which puts the registry in
    maintenance meanwhile) and return the bytes freed in ``storage_root``, or None when the
    block has no gc_command (the registry's storage is out of reach)."""
    logger = get_run_logger()
    if not registry.gc_command:
        logger.info("no gc_command on the registry block: deleted manifests stay in storage until the registry "
                    "runs `registry garbage-collect --delete-untagged` itself")
        return None
    root = Path(registry.storage_root) if registry.storage_root else None
    before = directory_bytes(root) if root and root.exists() else None
    run(registry.gc_command, timeout=3600, logger=logger,
        hint="the registry's garbage collection failed; it may still be in maintenance mode, check it")
    if before is None or root is None:
        return None
    freed = before - directory_bytes(root)
    logger.info("garbage collection freed %d bytes in %s", freed, root)
    return freed
