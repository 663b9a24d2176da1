"""Looking an image tag up in the registry: the digest it points at, or none."""

from __future__ import annotations

import time

import httpx
from prefect import task

from blocks import ContainerRegistry
from opsflow.core.errors import RemoteError
from opsflow.registry.v2 import image_name, repository_path


def _lookup_run_name() -> str:
    from prefect.runtime import task_run

    params = task_run.parameters
    return f"lookup-image-{image_name(params['repository'])}:{str(params['tag'])[:12]}"


@task(name="lookup-image", task_run_name=_lookup_run_name)
def lookup_image(registry: ContainerRegistry, repository: str, tag: str, attempts: int = 4) -> str | None:
    """The digest ``repository:tag`` has in the registry, or None when the tag does not exist."""
    path = f"/v2/{repository_path(registry.host, repository)}/manifests/{tag}"
    last: Exception | str = ""
    with registry.get_client() as client:
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
