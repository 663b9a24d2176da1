"""Reading the registry through the distribution v2 API (CNCF distribution, Harbor, ...)."""

from __future__ import annotations

import time

import httpx
from prefect import task

from blocks import ContainerRegistry
from opsflow.errors import RemoteError

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def registry_client(registry: ContainerRegistry) -> httpx.Client:
    auth = None
    if registry.username and registry.password is not None:
        auth = httpx.BasicAuth(registry.username, registry.password.get_secret_value())
    return httpx.Client(base_url=registry.url, auth=auth, verify=registry.verify_tls, timeout=registry.timeout,
                        headers={"Accept": MANIFEST_TYPES})


def repository_path(registry: ContainerRegistry, repository: str) -> str:
    """``host/ns/name`` → ``ns/name`` (the path the v2 API uses)."""
    prefix = f"{registry.host}/"
    return repository.removeprefix(prefix)


def image_name(repository: str) -> str:
    """``127.0.0.1:5000/team/app`` → ``team/app``: the repository without its registry host (for run names)."""
    host, _, rest = repository.partition("/")
    return rest if rest and ("." in host or ":" in host or host == "localhost") else repository


def _lookup_run_name() -> str:
    from prefect.runtime import task_run

    params = task_run.parameters
    return f"lookup-image-{image_name(params['repository'])}:{str(params['tag'])[:12]}"


@task(name="lookup-image", task_run_name=_lookup_run_name)
def lookup_image(registry: ContainerRegistry, repository: str, tag: str, attempts: int = 4) -> str | None:
    """The digest ``repository:tag`` has in the registry, or None when the tag does not exist."""
    path = f"/v2/{repository_path(registry, repository)}/manifests/{tag}"
    last: Exception | str = ""
    with registry_client(registry) as client:
        for attempt in range(attempts):
            try:
                resp = client.head(path)
            except httpx.HTTPError as exc:
                last = exc
            else:
                if resp.status_code == 200:
                    return resp.headers.get("Docker-Content-Digest")
                if resp.status_code == 404:
                    return None
                if resp.status_code < 500 and resp.status_code != 429:
                    raise RemoteError(f"registry {registry.url}: HEAD {path} answered {resp.status_code}; "
                                      "check the registry credentials in the block")
                last = f"HTTP {resp.status_code}"
            time.sleep(min(0.5 * 2 ** attempt, 8))
    raise RemoteError(f"registry {registry.url} did not answer HEAD {path} after {attempts} attempts: {last}")
