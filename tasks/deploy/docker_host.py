"""Rolling deploys on a Docker host (an edge node): replace with a health gate, roll back on failure."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
from prefect import get_run_logger, task

from blocks import ContainerRegistry, DockerHostTarget
from opsflow.core.errors import DeployFailed, InvalidInput, RemoteError
from tasks.deploy.plan import OPSFLOW_LABEL, ComponentRelease, docker_container_specs
from tasks.images.push import engine_refusal, trust_registry_ca


@dataclass
class RolloutResult:
    component: str
    version: str
    previous_image: str | None
    healthy: bool
    rolled_back: bool
    message: str
    containers: list[str] = field(default_factory=list)


@task(name="read-running-containers", task_run_name="read-running-{app}-{component}-{engine.name}", retries=1,
      retry_delay_seconds=2)
def running_specs(engine: DockerHostTarget, app: str, component: str) -> list[dict]:
    """What runs now for ``app``/``component`` on the engine, in the plan's shape (for the diff)."""
    with engine_session(engine) as client:
        found = client.containers.list(all=True, filters={"label": [f"{OPSFLOW_LABEL}.app={app}",
                                                                     f"{OPSFLOW_LABEL}.component={component}"]})
        return [{"name": c.name, "image": c.labels.get(f"{OPSFLOW_LABEL}.image", ""), "labels": c.labels,
                 "status": c.status} for c in found]


@contextmanager
def engine_session(engine: DockerHostTarget):
    """A client for ``engine``, closed afterwards. Docker SDK errors inside (an unreachable engine,
    an API error) become ``RemoteError`` naming the host and what to check."""
    import docker.errors

    client = None
    try:
        client = engine.get_client()
        yield client
    except docker.errors.DockerException as exc:
        raise RemoteError(f"Docker host {engine.name} ({engine.base_url}): {engine_error(exc)}") from exc
    finally:
        if client is not None:
            client.close()


def engine_error(exc: Exception) -> str:
    """A short reason for a Docker SDK error (an unreachable engine reads as such)."""
    import docker.errors

    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    return f"the engine cannot be reached ({exc}); check that it runs and the block's base_url"


def pull_if_missing(client, registry: ContainerRegistry, image: str) -> None:
    """Pull ``repository@digest`` unless the engine has it: a digest names one immutable image,
    so what is there is what was asked for (Kubernetes' IfNotPresent, without a registry call)."""
    import docker.errors

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    repository, digest = image.split("@", 1)
    trust_registry_ca(client.api.base_url, "this node's engine", registry, get_run_logger())
    try:
        client.images.pull(repository, tag=digest, auth_config=registry.auth_config())
    except docker.errors.APIError as exc:
        advice = engine_refusal(str(exc.explanation or exc), registry)
        if not advice:
            raise
        raise RemoteError(f"pull of {image} failed: {exc.explanation or exc}; {advice}") from None


def find_container(client, name: str):
    """The container called ``name`` on ``client``'s engine, or None."""
    import docker.errors

    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def wait_healthy(url: str, deadline_s: float, probe_timeout_s: float = 2) -> tuple[bool, str]:
    """Probe ``url`` until it answers 2xx or the deadline passes; (healthy, last observation)."""
    end = time.monotonic() + deadline_s
    last = "no answer yet"
    while time.monotonic() < end:
        try:
            resp = httpx.get(url, timeout=probe_timeout_s)
            if 200 <= resp.status_code < 300:
                return True, f"HTTP {resp.status_code}"
            last = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    return False, last


@task(name="rollout-docker", task_run_name="rollout-{release.component}-{engine.name}")
def rollout_docker(engine: DockerHostTarget, registry: ContainerRegistry, release: ComponentRelease) -> RolloutResult:
    """Replace the component's containers on ``engine`` with ``release``, gated on health.

    The previous containers are stopped and kept (renamed ``*-previous``) until the new ones are
    healthy; if they are not healthy within the release's deadline the new containers are
    removed and the previous ones started again. Raises DeployFailed after a rollback.
    """
    logger = get_run_logger()
    specs = docker_container_specs(release, engine.network_mode)
    previous: list = []
    started: list = []
    with engine_session(engine) as client:
        if find_container(client, f"{release.base_name}-proxy") is not None:
            raise InvalidInput(f"{release.base_name} runs blue-green on {engine.name} (its proxy owns the ports); "
                               "deploy it with method=blue-green, or remove the proxy container first")
        pull_if_missing(client, registry, release.image)
        for spec in specs:
            old = find_container(client, spec["name"])
            if old is None:
                continue
            stale = f"{spec['name']}-previous"
            leftover = find_container(client, stale)
            if leftover is not None:
                leftover.remove(force=True)
            old.rename(stale)
            old.stop(timeout=10)
            previous.append((spec["name"], old))
        previous_image = previous[0][1].labels.get(f"{OPSFLOW_LABEL}.image") if previous else None
        for spec in specs:
            kwargs = {k: v for k, v in spec.items() if v is not None and k != "name"}
            started.append(client.containers.run(name=spec["name"], detach=True, **kwargs))
        url = (f"http://{engine.public_host}:{release.ports[0]}{release.health_path}"
               if release.ports and release.health_path else None)
        healthy, seen = wait_healthy(url, release.health_deadline_s) if url else (True, "no health check")
        if healthy:
            for _, old in previous:
                old.remove(force=True)
            logger.info("%s %s is healthy on %s (%s)", release.base_name, release.version, engine.name, seen)
            return RolloutResult(release.component, release.version, previous_image, True, False, f"healthy ({seen})",
                                 [c.name for c in started])
        for new in started:
            new.remove(force=True)
        for name, old in previous:
            old.rename(name)
            old.start()
        back = f"; the previous version ({previous_image}) is serving again" if previous else ""
        raise DeployFailed(f"{release.base_name} {release.version} on {engine.name} was not healthy within "
                           f"{release.health_deadline_s:g}s (last probe of {url}: {seen}); rolled back{back}")
