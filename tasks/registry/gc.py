"""The registry's garbage collection after a cleanup, the bytes it freed, and the check that every kept tag
still resolves and pulls afterwards.

Garbage collection runs in distribution's safe mode (mark and sweep without ``--delete-untagged``, which
in 2.8 deletes the untagged platform manifests of kept image indexes; the block refuses that flag). The
cleanup deletes what it removes by digest, platform manifests of deleted indexes included, so nothing is
left for ``--delete-untagged`` to do. A ``gc_command`` is a script of the user's, though: after it ran,
every tag the plan kept is resolved again, with every manifest and blob a pull needs, and the run fails
loudly naming what broke (blobs a sweep deleted cannot be put back from here: restore the registry's
storage from its backup).
"""

from __future__ import annotations

from pathlib import Path

import httpx
from prefect import get_run_logger, task

from blocks import ContainerRegistry
from opsflow.core.errors import RegistryBroken
from opsflow.core.files import directory_bytes
from opsflow.core.proc import run
from opsflow.core.threads import ContextThreadPool
from opsflow.registry.v2 import INDEX_TYPES, request
from tasks.registry.plan import CleanupPlan


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


def _pullable(client: httpx.Client, repository: str, reference: str, seen: dict[tuple[str, str], str]) -> str:
    """Empty when ``repository:reference`` resolves with every manifest and blob a pull needs, else what is missing."""
    resp = request(client, "GET", f"/v2/{repository}/manifests/{reference}")
    if resp.status_code != 200:
        return f"manifest {reference} answers HTTP {resp.status_code}"
    manifest = resp.json()
    if (manifest.get("mediaType") or resp.headers.get("Content-Type", "")) in INDEX_TYPES:
        for child in manifest.get("manifests") or []:
            key = (repository, child["digest"])
            if key not in seen:
                seen[key] = _pullable(client, repository, child["digest"], seen)
            if seen[key]:
                return f"child {child['digest'][:19]}: {seen[key]}"
        return ""
    for blob in [manifest.get("config") or {}, *(manifest.get("layers") or [])]:
        digest = blob.get("digest")
        if not digest:
            continue
        key = (repository, digest)
        if key not in seen:
            status = request(client, "HEAD", f"/v2/{repository}/blobs/{digest}").status_code
            seen[key] = "" if status == 200 else f"blob {digest[:19]} answers HTTP {status}"
        if seen[key]:
            return seen[key]
    return ""


@task(name="verify-kept-images", task_run_name="verify-kept-images")
def verify_kept_images(registry: ContainerRegistry, plan: CleanupPlan, concurrency: int = 8) -> int:
    """Every tag the plan kept still resolves, with every manifest and blob a pull of it needs.

    Returns the number of tags checked. Raises RegistryBroken listing the tags that do not.
    """
    kept = plan.kept_tags()
    seen: dict[tuple[str, str], str] = {}
    with registry.get_client() as client, ContextThreadPool(concurrency) as pool:
        problems = [(repo, tag, why) for (repo, tag, _digest), why in
                    zip(kept, pool.map(lambda k: _pullable(client, k[0], k[1], seen), kept), strict=True) if why]
    if problems:
        listed = "; ".join(f"{repo}:{tag}: {why}" for repo, tag, why in problems[:20])
        raise RegistryBroken(f"after garbage collection {len(problems)} kept tag(s) of {registry.url} no longer pull: "
                             f"{listed}. The registry's gc_command deleted what they need (does it run "
                             "`garbage-collect --delete-untagged`?); restore the registry storage from its backup "
                             "and run garbage collection without --delete-untagged")
    get_run_logger().info("all %d kept tags still resolve and pull", len(kept))
    return len(kept)
