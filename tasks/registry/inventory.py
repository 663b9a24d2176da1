"""What is in the registry: every tag of the chosen repositories with its manifest's digest, size and age.

Which repositories: the registry's catalog (``/v2/_catalog``); for a ``kind: harbor`` block, Harbor's
projects/repositories API; where the catalog is refused (Harbor robot accounts, GitLab) the policy's
repository list and the run's exact repository names. The result says which was used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import httpx
from prefect import get_run_logger, task

from blocks import ContainerRegistry
from blocks.cleanup_policy import is_pattern, matches_any
from opsflow.core.errors import CatalogRefused, InvalidInput
from opsflow.core.threads import ContextThreadPool
from opsflow.registry.harbor import list_project_repositories, list_projects
from opsflow.registry.v2 import INDEX_TYPES, get_manifest, list_repositories, list_tags, request
from tasks.registry.plan import ImageRecord

CATALOG = "the registry's catalog (/v2/_catalog)"
HARBOR = "Harbor's projects/repositories API"
LISTED = "the repositories listed by name (the registry refuses its catalog to this user)"


@dataclass
class _ManifestCache:
    """Manifests and config blobs read once per inventory (many tags share them)."""

    manifests: dict[tuple[str, str], tuple[str, dict]] = field(default_factory=dict)
    created: dict[str, datetime | None] = field(default_factory=dict)


@dataclass
class Inventory:
    """The tags found, where the repository list came from, and untagged manifests known to exist."""

    images: list[ImageRecord]
    source: str
    repositories: list[str]
    existing: set[tuple[str, str]] = field(default_factory=set)


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


def _subject(manifest: dict) -> str | None:
    subject = manifest.get("subject")
    return subject.get("digest") if isinstance(subject, dict) else None


def read_image(client: httpx.Client, repository: str, tag: str, cache: _ManifestCache) -> ImageRecord:
    """The manifest ``repository:tag`` points at: digest, type, size, creation time, index children, subject."""
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
        return ImageRecord(repository, tag, digest, created, size, media_type, children, _subject(manifest))
    return ImageRecord(repository, tag, digest, _created(client, repository, manifest, cache), _image_size(manifest),
                       media_type, subject=_subject(manifest))


def _harbor_repositories(registry: ContainerRegistry) -> list[str]:
    with registry.get_harbor_client() as api:
        projects = [registry.namespace.split("/")[0]] if registry.namespace else list_projects(api)
        return sorted({repo for project in projects for repo in list_project_repositories(api, project)})


def choose_repositories(registry: ContainerRegistry, client: httpx.Client, patterns: list[str],
                        listed: list[str]) -> tuple[list[str], str]:
    """The repositories to look at and where that list came from (see the module docstring).

    Raises:
        InvalidInput: the catalog is refused and no repository is listed by name.
    """
    if registry.kind == "harbor":
        found, source = _harbor_repositories(registry), HARBOR
    else:
        try:
            found, source = list_repositories(client), CATALOG
        except CatalogRefused as exc:
            names = sorted({n for n in [*listed, *patterns] if not is_pattern(n)})
            if not names:
                raise InvalidInput(f"{exc}; list the repositories to clean by name in the policy's `repositories` "
                                   "(or the run's `repositories`), or set kind: harbor on the registry block to use "
                                   "Harbor's API") from None
            return [n for n in names if not patterns or matches_any(n, patterns)], LISTED
    return [r for r in found if not patterns or matches_any(r, patterns)], source


def _existing_subjects(client: httpx.Client, images: list[ImageRecord],
                       pool: ContextThreadPool) -> set[tuple[str, str]]:
    """Subjects of signatures that are not among the tags' manifests: do they exist (untagged)?"""
    known = {(i.repository, i.digest) for i in images} | {(i.repository, c) for i in images for c in i.children}
    wanted = sorted({(i.repository, i.attached_to) for i in images if i.attached_to} - known)

    def exists(item: tuple[str, str]) -> tuple[str, str] | None:
        resp = request(client, "HEAD", f"/v2/{item[0]}/manifests/{item[1]}")
        return item if resp.status_code == 200 else None

    return {found for found in pool.map(exists, wanted) if found}


@task(name="inventory-registry", task_run_name="inventory-registry")
def inventory_registry(registry: ContainerRegistry, repositories: list[str] | None = None,
                       listed: list[str] | None = None, concurrency: int = 8) -> Inventory:
    """Every tag of the matching repositories with its manifest's digest, size and creation time.

    Args:
        registry: the registry block.
        repositories: globs or ``re:`` patterns; every repository found when empty.
        listed: exact repository names to use when the registry refuses its catalog.
        concurrency: API calls at a time.
    Returns:
        The tags, the repository list's source and the untagged signature subjects that exist.
    Raises:
        InvalidInput: the catalog is refused and no repository is listed by name.
    """
    logger = get_run_logger()
    cache = _ManifestCache()
    with registry.get_client() as client:
        repos, source = choose_repositories(registry, client, repositories or [], listed or [])
        with ContextThreadPool(concurrency) as pool:
            tag_lists = list(pool.map(lambda r: (r, list_tags(client, r)), repos))
            pairs = [(repo, tag) for repo, tags in tag_lists for tag in tags]
            images = list(pool.map(lambda p: read_image(client, p[0], p[1], cache), pairs))
            existing = _existing_subjects(client, images, pool)
    logger.info("registry %s: %d repositories from %s, %d tags, %d manifests", registry.url, len(repos), source,
                len(images), len({(i.repository, i.digest) for i in images}))
    return Inventory(images, source, repos, existing)


@task(name="find-referrers", task_run_name="find-referrers")
def find_referrers(registry: ContainerRegistry, subjects: list[tuple[str, str]],
                   concurrency: int = 8) -> list[ImageRecord]:
    """Untagged referrers (signatures, SBOMs, attestations pushed with a ``subject``) of ``subjects``
    (repository, digest), from the OCI referrers API where the registry has it (an empty list where it
    answers 404: distribution 2.8 has no such API; cosign's tags are found by the inventory)."""
    found: list[ImageRecord] = []
    if not subjects:
        return found
    with registry.get_client() as client:
        first = request(client, "GET", f"/v2/{subjects[0][0]}/referrers/{subjects[0][1]}")
        if first.status_code != 200 or "manifests" not in _json(first):
            get_run_logger().info("registry %s has no referrers API (HTTP %d): only tagged signatures are "
                                  "cleaned with their images", registry.url, first.status_code)
            return found

        def one(item: tuple[str, str]) -> list[ImageRecord]:
            repo, digest = item
            resp = first if item == subjects[0] else request(client, "GET", f"/v2/{repo}/referrers/{digest}")
            return [ImageRecord(repo, "", m["digest"], None, int(m.get("size") or 0), m.get("mediaType", ""),
                                subject=digest) for m in _json(resp).get("manifests") or [] if m.get("digest")]

        with ContextThreadPool(concurrency) as pool:
            for records in pool.map(one, subjects):
                found += records
    return found


def _json(resp: httpx.Response) -> dict:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
