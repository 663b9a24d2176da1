"""Looking an image tag up in the registry: the digest it points at, or none."""

from __future__ import annotations

from prefect import task

from blocks import ContainerRegistry
from opsflow.core.errors import RemoteError
from opsflow.registry.v2 import image_name, repository_path, request


def _lookup_run_name() -> str:
    from prefect.runtime import task_run

    params = task_run.parameters
    return f"lookup-image-{image_name(params['repository'])}:{str(params['tag'])[:12]}"


def _digest(registry: ContainerRegistry, client, repository: str, tag: str, attempts: int) -> str | None:
    path = f"/v2/{repository_path(registry.host, repository)}/manifests/{tag}"
    resp = request(client, "HEAD", path, attempts=attempts)
    if resp.status_code == 200:
        return resp.headers.get("Docker-Content-Digest")
    if resp.status_code == 404:
        return None
    who = f"user {registry.username!r}" if registry.username else "an anonymous client"
    raise RemoteError(f"registry {registry.url}: HEAD {path} answered {resp.status_code}; {who} may not read "
                      f"{repository}: check the registry credentials in the block")


@task(name="lookup-image", task_run_name=_lookup_run_name)
def lookup_image(registry: ContainerRegistry, repository: str, tag: str, attempts: int = 4) -> str | None:
    """The digest ``repository:tag`` has in the registry, or None when the tag does not exist.

    Raises:
        RegistryAuthError: the registry refused the block's credentials (the registry and user are named).
        RegistryTlsError: the registry's certificate is not trusted (the block's ``ca_cert`` is named).
        RemoteError: any other refusal, or no answer after ``attempts`` (with back-off).
    """
    with registry.get_client() as client:
        return _digest(registry, client, repository, tag, attempts)


def lookup_tags(registry: ContainerRegistry, repository: str, tags: list[str],
                attempts: int = 4) -> dict[str, str | None]:
    """The digest each of ``tags`` of ``repository`` has in the registry (None: no such tag), over one
    connection and one login (a merge asks for the commit, branch and version tags of each image, beside its
    fetch: a plain call, no task run; each request is retried with back-off, ``opsflow.registry.v2.request``).

    Raises:
        RegistryAuthError, RegistryTlsError, RemoteError: as :func:`lookup_image`.
    """
    with registry.get_client() as client:
        return {tag: _digest(registry, client, repository, tag, attempts) for tag in dict.fromkeys(tags)}
