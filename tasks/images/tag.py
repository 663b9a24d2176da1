"""Adding tags to an image already in the registry: its manifest put again under each new tag.

This is how ``crane tag`` and ``regctl image copy`` retag: ``GET /v2/<name>/manifests/<digest>`` and
``PUT /v2/<name>/manifests/<tag>`` with the same bytes and media type, so the digest is unchanged and
no layer moves. The merge uses it for a version tag on an already-pushed commit and to fill in tags
a partial push left out, without the image being on any engine.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from blocks import ContainerRegistry
from blocks.fields import check_digest, check_tag
from opsflow.core.errors import RemoteError
from opsflow.registry.v2 import MANIFEST_TYPES, image_name, repository_path, request


def _tag_run_name() -> str:
    from prefect.runtime import task_run

    return f"tag-image-{image_name(task_run.parameters['repository'])}"


def put_tags(registry: ContainerRegistry, repository: str, digest: str, tags: list[str], logger) -> list[str]:
    """Point each of ``tags`` at ``repository@digest`` (its manifest put again under each); returns the tags put.

    Raises:
        RemoteError: the manifest is not there, or the registry refused a tag, or put it on another digest.
    """
    check_digest(digest)
    for tag in tags:
        check_tag(tag)
    path = repository_path(registry.host, repository)
    with registry.get_client() as client:
        got = request(client, "GET", f"/v2/{path}/manifests/{digest}", headers={"Accept": MANIFEST_TYPES})
        if got.status_code != 200:
            raise RemoteError(f"registry {registry.url}: {repository}@{digest} answered {got.status_code}; "
                              "the image to tag is not there")
        media_type = got.headers.get("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
        for tag in tags:
            put = request(client, "PUT", f"/v2/{path}/manifests/{tag}", content=got.content,
                          headers={"Content-Type": media_type})
            if put.status_code not in (200, 201):
                raise RemoteError(f"registry {registry.url}: tagging {repository}:{tag} answered {put.status_code}: "
                                  f"{put.text[:200]}")
            if put.headers.get("Docker-Content-Digest", digest) != digest:
                raise RemoteError(f"registry {registry.url}: {repository}:{tag} got digest "
                                  f"{put.headers['Docker-Content-Digest']}, not {digest}")
            logger.info("tagged %s@%s as %s", repository, digest, tag)
    return list(tags)


@task(name="tag-image", task_run_name=_tag_run_name, retries=2, retry_delay_seconds=[2, 8])
def tag_image(registry: ContainerRegistry, repository: str, digest: str, tags: list[str]) -> list[str]:
    """Point each of ``tags`` at ``repository@digest``; returns the tags put.

    Raises:
        RemoteError: the manifest is not there, or the registry refused a tag, or put it on another digest.
    """
    return put_tags(registry, repository, digest, tags, get_run_logger())
