"""What is in the registry: every tag of the chosen repositories with its manifest's digest, size and age."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import httpx
from prefect import get_run_logger, task

from blocks import ContainerRegistry
from blocks.cleanup_policy import matches_any
from opsflow.core.threads import ContextThreadPool
from opsflow.registry.v2 import INDEX_TYPES, get_manifest, list_repositories, list_tags, request
from tasks.registry.plan import ImageRecord


@dataclass
class _ManifestCache:
    """Manifests and config blobs read once per inventory (many tags share them)."""

    manifests: dict[tuple[str, str], tuple[str, dict]] = field(default_factory=dict)
    created: dict[str, datetime | None] = field(default_factory=dict)


def _created(client: httpx.Client, repository: str, manifest: dict, cache: _ManifestCache) -> datetime | None:
    config = (manifest.get("config") or {}).get("digest")
    if not config:
        return None
    if config not in cache.created:
        resp = request(client, "GET", f"/v2/{repository}/blobs/{config}", follow_redirects=True)
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
    layers = manifest.get("layers") or []
    return (manifest.get("config") or {}).get("size", 0) + sum(layer.get("size", 0) for layer in layers)


def read_image(client: httpx.Client, repository: str, tag: str, cache: _ManifestCache) -> ImageRecord:
    """The manifest ``repository:tag`` points at: digest, type, size, creation time, index children."""
    digest, media_type, manifest = get_manifest(client, repository, tag)
    media_type = manifest.get("mediaType") or media_type
    if media_type in INDEX_TYPES:
        children = tuple(m["digest"] for m in manifest.get("manifests") or [])
        size, created = 0, None
        for child in children:
            _, _, child_manifest = get_manifest(client, repository, child)
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
    with registry.get_client() as client:
        repos = [r for r in list_repositories(client) if not repositories or matches_any(r, repositories)]
        with ContextThreadPool(concurrency) as pool:
            tag_lists = list(pool.map(lambda r: (r, list_tags(client, r)), repos))
            pairs = [(repo, tag) for repo, tags in tag_lists for tag in tags]
            images = list(pool.map(lambda p: read_image(client, p[0], p[1], cache), pairs))
    logger.info("registry %s: %d repositories, %d tags, %d manifests", registry.url, len(repos), len(images),
                len({(i.repository, i.digest) for i in images}))
    return images
