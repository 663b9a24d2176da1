"""Registry cleanup against the distribution v2 API: inventory, apply a plan, garbage collection."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from prefect import get_run_logger, task

from blocks import ContainerRegistry
from blocks.cleanup_policy import matches_any
from opsflow.errors import OpsflowError, RemoteError
from opsflow.proc import run
from tasks.progress import StepProgress
from tasks.registry_api import registry_client
from tasks.registry_cleanup_plan import CleanupPlan, ImageRecord

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
RETRY_STATUS = {429, 500, 502, 503, 504}


class DeletesDisabled(OpsflowError):
    """The registry refuses deletes (CNCF distribution without storage.delete.enabled)."""


def _request(client: httpx.Client, method: str, path: str, attempts: int = 4, **kwargs) -> httpx.Response:
    """One API call with retries on connection errors, 429 and 5xx (exponential back-off)."""
    last: Exception | str = ""
    for attempt in range(attempts):
        try:
            resp = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            last = exc
        else:
            if resp.status_code not in RETRY_STATUS:
                return resp
            last = f"HTTP {resp.status_code}"
        time.sleep(min(0.2 * 2 ** attempt, 5))
    raise RemoteError(f"registry: {method} {path} failed after {attempts} attempts: {last}")


def _paged(client: httpx.Client, path: str, key: str) -> list[str]:
    """Follow the v2 API's ``Link: <...>; rel="next"`` pagination."""
    items: list[str] = []
    url: str | None = path
    while url:
        resp = _request(client, "GET", url)
        if resp.status_code == 404:
            return items
        if resp.status_code != 200:
            raise RemoteError(f"registry: GET {url} answered {resp.status_code}: {resp.text[:200]}")
        items += resp.json().get(key) or []
        link = resp.links.get("next", {}).get("url")
        url = link if link and link != url else None
    return items


def list_repositories(client: httpx.Client) -> list[str]:
    return _paged(client, "/v2/_catalog?n=1000", "repositories")


def list_tags(client: httpx.Client, repository: str) -> list[str]:
    return _paged(client, f"/v2/{repository}/tags/list?n=1000", "tags")


@dataclass
class _ManifestCache:
    """Manifests and config blobs read once per inventory (many tags share them)."""

    manifests: dict[tuple[str, str], tuple[str, dict]] = field(default_factory=dict)
    created: dict[str, datetime | None] = field(default_factory=dict)


def _manifest(client: httpx.Client, repository: str, reference: str) -> tuple[str, str, dict]:
    resp = _request(client, "GET", f"/v2/{repository}/manifests/{reference}")
    if resp.status_code != 200:
        raise RemoteError(f"registry: manifest {repository}:{reference} answered {resp.status_code}")
    digest = resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(resp.content).hexdigest()
    return digest, resp.headers.get("Content-Type", ""), resp.json()


def _created(client: httpx.Client, repository: str, manifest: dict, cache: _ManifestCache) -> datetime | None:
    config = (manifest.get("config") or {}).get("digest")
    if not config:
        return None
    if config not in cache.created:
        resp = _request(client, "GET", f"/v2/{repository}/blobs/{config}", follow_redirects=True)
        stamp = None
        if resp.status_code == 200:
            try:
                raw = resp.json().get("created")
                stamp = datetime.fromisoformat(raw) if raw else None
            except ValueError:
                stamp = None
        cache.created[config] = stamp
    return cache.created[config]


def _image_size(manifest: dict) -> int:
    return (manifest.get("config") or {}).get("size", 0) + sum(layer.get("size", 0) for layer in manifest.get("layers") or [])


def read_image(client: httpx.Client, repository: str, tag: str, cache: _ManifestCache) -> ImageRecord:
    """The manifest ``repository:tag`` points at: digest, type, size, creation time, index children."""
    digest, media_type, manifest = _manifest(client, repository, tag)
    media_type = manifest.get("mediaType") or media_type
    if media_type in INDEX_TYPES:
        children = tuple(m["digest"] for m in manifest.get("manifests") or [])
        size, created = 0, None
        for child in children:
            _, _, child_manifest = _manifest(client, repository, child)
            size += _image_size(child_manifest)
            stamp = _created(client, repository, child_manifest, cache)
            created = max(filter(None, (created, stamp)), default=None)
        return ImageRecord(repository, tag, digest, created, size, media_type, children)
    return ImageRecord(repository, tag, digest, _created(client, repository, manifest, cache), _image_size(manifest),
                       media_type)


@task(name="inventory-registry", task_run_name="inventory-registry")
def inventory_registry(registry: ContainerRegistry, repositories: list[str] | None = None,
                       concurrency: int = 8) -> list[ImageRecord]:
    """Every tag of the matching repositories with its manifest's digest, size and creation time.

    ``repositories`` are globs or ``re:`` patterns; all repositories of the catalog when empty.
    """
    logger = get_run_logger()
    cache = _ManifestCache()
    with registry_client(registry) as client:
        repos = [r for r in list_repositories(client) if not repositories or matches_any(r, repositories)]
        with ThreadPoolExecutor(concurrency) as pool:
            tag_lists = list(pool.map(lambda r: (r, list_tags(client, r)), repos))
            pairs = [(repo, tag) for repo, tags in tag_lists for tag in tags]
            images = list(pool.map(lambda p: read_image(client, p[0], p[1], cache), pairs))
    logger.info("registry %s: %d repositories, %d tags, %d manifests", registry.url, len(repos), len(images),
                len({(i.repository, i.digest) for i in images}))
    return images


@dataclass
class ApplyResult:
    deleted_manifests: list[tuple[str, str]] = field(default_factory=list)
    untagged: list[tuple[str, str]] = field(default_factory=list)
    already_gone: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0


def delete_manifest(client: httpx.Client, repository: str, digest: str) -> bool:
    """DELETE by digest; True when deleted, False when it was already gone."""
    resp = _request(client, "DELETE", f"/v2/{repository}/manifests/{digest}")
    if resp.status_code in (200, 202):
        return True
    if resp.status_code == 404:
        return False
    if resp.status_code == 405:
        raise DeletesDisabled(f"registry refuses deletes ({resp.status_code} {resp.text[:120].strip()}): enable them "
                              "with storage.delete.enabled: true (REGISTRY_STORAGE_DELETE_ENABLED=true)")
    raise RemoteError(f"registry: DELETE {repository}@{digest} answered {resp.status_code}: {resp.text[:200]}")


def _upload_blob(client: httpx.Client, repository: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if _request(client, "HEAD", f"/v2/{repository}/blobs/{digest}").status_code == 200:
        return digest
    start = _request(client, "POST", f"/v2/{repository}/blobs/uploads/")
    if start.status_code != 202:
        raise RemoteError(f"registry: blob upload to {repository} answered {start.status_code}")
    location = start.headers["Location"]
    sep = "&" if "?" in location else "?"
    put = _request(client, "PUT", f"{location}{sep}digest={digest}", content=data,
                   headers={"Content-Type": "application/octet-stream"})
    if put.status_code != 201:
        raise RemoteError(f"registry: blob upload to {repository} answered {put.status_code}")
    return digest


def untag(client: httpx.Client, repository: str, tag: str) -> None:
    """Remove one tag of a manifest that keeps other tags: point the tag at a unique, empty
    placeholder manifest, then delete that placeholder by digest (the regclient method)."""
    config = json.dumps({"architecture": "none", "os": "none", "rootfs": {"type": "layers", "diff_ids": []},
                         "config": {"Labels": {"org.opsflow.placeholder": str(uuid.uuid4())}}}).encode()
    config_digest = _upload_blob(client, repository, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": config_digest, "size": len(config)},
                           "layers": []}).encode()
    put = _request(client, "PUT", f"/v2/{repository}/manifests/{tag}", content=manifest,
                   headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    if put.status_code != 201:
        raise RemoteError(f"registry: placeholder for {repository}:{tag} answered {put.status_code}: {put.text[:200]}")
    delete_manifest(client, repository, put.headers.get("Docker-Content-Digest")
                    or "sha256:" + hashlib.sha256(manifest).hexdigest())


@task(name="apply-registry-cleanup", task_run_name="apply-registry-cleanup")
def apply_registry_cleanup(registry: ContainerRegistry, plan: CleanupPlan, concurrency: int = 8) -> ApplyResult:
    """Delete the plan's manifests and untag its shared tags, ``concurrency`` API calls at a time.

    A failure of one call is recorded and the others go on; the task fails at the end listing
    them. Raises DeletesDisabled at once when the registry refuses deletes.
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

    work = [("untag", r, t) for r, t in plan.untags()] + [("delete", r, d) for r, d in plan.deletions()]
    with (StepProgress("registry cleanup apply", total=len(work), unit="API calls", logger=logger) as progress,
          registry_client(registry) as client, ThreadPoolExecutor(max(1, concurrency)) as pool):
        list(pool.map(one, work))
    result.seconds = time.perf_counter() - started
    logger.info("deleted %d manifests, untagged %d tags, %d already gone, %d failed in %.1fs",
                len(result.deleted_manifests), len(result.untagged), len(result.already_gone), len(result.failed),
                result.seconds)
    if result.failed:
        raise RemoteError("registry cleanup: " + "; ".join(f"{r}@{ref}: {err}" for r, ref, err in result.failed[:10]))
    return result


def directory_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


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
