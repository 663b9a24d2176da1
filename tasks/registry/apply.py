"""Applying a registry cleanup plan: delete manifests by digest and untag shared tags, a few calls at a time."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field

import httpx
from prefect import get_run_logger, task

from blocks import ContainerRegistry
from opsflow.core.errors import DeletesDisabled, OpsflowError, RemoteError
from opsflow.core.threads import ContextThreadPool
from opsflow.registry.v2 import delete_manifest, request, upload_blob
from tasks.progress import StepProgress
from tasks.registry.plan import INDEX_TYPES, CleanupPlan


@dataclass
class ApplyResult:
    deleted_manifests: list[tuple[str, str]] = field(default_factory=list)
    untagged: list[tuple[str, str]] = field(default_factory=list)
    already_gone: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0


def untag(client: httpx.Client, repository: str, tag: str) -> None:
    """Remove one tag of a manifest that keeps other tags: point the tag at a unique, empty
    placeholder manifest, then delete that placeholder by digest (the regclient method)."""
    config = json.dumps({"architecture": "none", "os": "none", "rootfs": {"type": "layers", "diff_ids": []},
                         "config": {"Labels": {"org.opsflow.placeholder": str(uuid.uuid4())}}}).encode()
    config_digest = upload_blob(client, repository, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": config_digest, "size": len(config)},
                           "layers": []}).encode()
    put = request(client, "PUT", f"/v2/{repository}/manifests/{tag}", content=manifest,
                   headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    if put.status_code != 201:
        raise RemoteError(f"registry: placeholder for {repository}:{tag} answered {put.status_code}: {put.text[:200]}")
    delete_manifest(client, repository, put.headers.get("Docker-Content-Digest")
                    or "sha256:" + hashlib.sha256(manifest).hexdigest())


@task(name="apply-registry-cleanup", task_run_name="apply-registry-cleanup")
def apply_registry_cleanup(registry: ContainerRegistry, plan: CleanupPlan, concurrency: int = 8) -> ApplyResult:
    """Delete the plan's manifests and untag its shared tags, ``concurrency`` API calls at a time.

    Untags go first, then indexes, then the other manifests (the platform manifests of deleted indexes
    among them). A failure of one call is recorded and the others of its phase go on; later phases do not
    start, and the task fails listing them. Raises DeletesDisabled at once when the registry refuses deletes.
    """
    logger = get_run_logger()
    result = ApplyResult()
    started = time.perf_counter()

    def one(item: tuple[str, str, str]) -> None:
        kind, repository, ref = item
        try:
            if kind == "delete":
                (result.deleted_manifests if delete_manifest(client, repository, ref) else result.already_gone).append(
                    (repository, ref))
            else:
                untag(client, repository, ref)
                result.untagged.append((repository, ref))
        except DeletesDisabled:
            raise
        except OpsflowError as exc:
            result.failed.append((repository, ref, str(exc)))
        finally:
            progress.advance()

    # Untags first, then indexes, then the other manifests: an index is never left pointing at a deleted child.
    deletions = plan.deletions()
    indexes = {(r.repository, r.digest) for r in plan.rows if r.action == "delete" and r.media_type in INDEX_TYPES}
    phases = [[("untag", r, t) for r, t in plan.untags()],
              [("delete", r, d) for r, d in deletions if (r, d) in indexes],
              [("delete", r, d) for r, d in deletions if (r, d) not in indexes]]
    with (StepProgress("registry cleanup apply", total=sum(map(len, phases)), unit="API calls",
                       logger=logger) as progress,
          registry.get_client() as client, ContextThreadPool(max(1, concurrency)) as pool):
        for work in phases:
            list(pool.map(one, work))
            if result.failed:  # the children of an index that could not be deleted must stay
                break
    result.seconds = time.perf_counter() - started
    logger.info("deleted %d manifests, untagged %d tags, %d already gone, %d failed in %.1fs",
                len(result.deleted_manifests), len(result.untagged), len(result.already_gone), len(result.failed),
                result.seconds)
    if result.failed:
        raise RemoteError("registry cleanup: " + "; ".join(f"{r}@{ref}: {err}" for r, ref, err in result.failed[:10]))
    return result
