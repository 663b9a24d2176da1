"""Deploys on a Docker host (an edge node): containers made from a release, health waits, and the
rollout where the old containers must stop first (host networking: two cannot hold one port).

Every failure after an old container was stopped (create, start, a container that exits at once,
a health check that never passes, even an interrupt) puts the previous containers back, starts
them and checks that they answer before the run fails; the message says whether they do. Rollouts
that start the new containers beside the old ones (bridge networking, or no ports) are in
``tasks/deploy/surge.py``; batch roles and scaling to zero are here too.
"""

from __future__ import annotations

import io
import tarfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
from prefect import get_run_logger, task

from blocks import ContainerRegistry, DockerHostTarget
from blocks.application import RoleKind
from opsflow.core import tls
from opsflow.core.errors import DeployFailed, RemoteError
from opsflow.core.threads import ContextThreadPool
from tasks.deploy.plan import OPSFLOW_LABEL, ROLE_LABEL, ComponentRelease, docker_container_specs
from tasks.deploy.runtime import RuntimeValues, load_runtime
from tasks.images.push import engine_refusal, trust_registry_ca

_NOT_CREATE_ARGS = ("name", "networks", "secret_files", "network")


@dataclass
class RolloutResult:
    component: str
    version: str
    previous_image: str | None
    healthy: bool
    rolled_back: bool
    message: str
    containers: list[str] = field(default_factory=list)
    replicas: int = 1


def read_target(engine: DockerHostTarget, app: str, components: list[str]) -> dict:
    """What a plan needs from an engine, in one session: its CPUs, memory and version (``docker info``,
    which the limits are checked against) and, per component, what runs now in the plan's shape.
    An engine that does not answer is asked once more, 2 s later. A plain function, no task run (the
    flow calls it in a thread beside the registry lookups): a task run cost a deploy 40-150 ms.

    Raises:
        RemoteError: the engine did not answer or refused, twice.
    """
    try:
        info, found = _read_engine(engine, app)
    except RemoteError:
        time.sleep(2)
        info, found = _read_engine(engine, app)
    running: dict[str, list[dict]] = {c: [] for c in components}
    for container in found:
        component = container.labels.get(f"{OPSFLOW_LABEL}.component")
        if component in running:
            running[component].append({"name": container.name, "status": container.status,
                                       "image": container.labels.get(f"{OPSFLOW_LABEL}.image", ""),
                                       "labels": container.labels})
    return {"info": {k: info.get(k) for k in ("NCPU", "MemTotal", "ServerVersion", "OperatingSystem")},
            "running": running}


def _read_engine(engine: DockerHostTarget, app: str) -> tuple[dict, list]:
    with engine_session(engine) as client:
        return client.info(), client.containers.list(all=True, filters={"label": [f"{OPSFLOW_LABEL}.app={app}"]})


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


def engine_error(exc: BaseException) -> str:
    """A short reason for a Docker SDK error (an unreachable engine reads as such)."""
    import docker.errors

    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    if isinstance(exc, docker.errors.DockerException):
        return f"the engine cannot be reached ({exc}); check that it runs and the block's base_url"
    return f"{type(exc).__name__}: {exc}"


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
        raise DeployFailed(f"could not pull {image}: {engine_error(exc)}{'; ' + advice if advice else ''}; nothing "
                           "was changed, the running version was not touched") from None


def find_container(client, name: str):
    """The container called ``name`` on ``client``'s engine, or None."""
    import docker.errors

    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def role_containers(client, release: ComponentRelease) -> list:
    """The containers of ``release``'s component and role (not its proxy), running or not."""
    found = client.containers.list(all=True, filters={"label": [f"{OPSFLOW_LABEL}.app={release.app}",
                                                                 f"{OPSFLOW_LABEL}.component={release.component}"]})
    return sorted((c for c in found if c.labels.get(f"{OPSFLOW_LABEL}.role") != "proxy"
                   and c.labels.get(ROLE_LABEL, "service") == release.role), key=lambda c: c.name)


def ensure_networks(client, names: list[str], app: str) -> None:
    """The extra networks a release joins, created as bridge networks when missing."""
    for name in names:
        if not [n for n in client.networks.list(names=[name]) if n.name == name]:
            client.networks.create(name, driver="bridge", labels={f"{OPSFLOW_LABEL}.app": app})


def secret_archive(files: dict) -> bytes:
    """A tar of the secret files (path -> (SecretStr, mode)), extracted at '/' in a created container."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, (content, mode) in files.items():
            data = content.get_secret_value().encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def create_container(client, spec: dict, values: RuntimeValues):
    """Create (not start) the container of ``spec``, join its extra networks and put its secret
    files in (they never touch an image or the host's disk). Returns the container."""
    kwargs = {k: v for k, v in spec.items() if v is not None and k not in _NOT_CREATE_ARGS}
    if spec.get("network"):
        kwargs["network"] = spec["network"]
    container = client.containers.create(name=spec["name"], **kwargs)
    try:
        for network in spec.get("networks") or []:
            client.networks.get(network).connect(container)
        if values.files:
            container.put_archive("/", secret_archive(values.files))
    except BaseException:
        container.remove(force=True)
        raise
    return container


def start_container(client, spec: dict, values: RuntimeValues):
    """Create and start; a container that cannot start is removed again."""
    container = create_container(client, spec, values)
    try:
        container.start()
    except BaseException:
        container.remove(force=True)
        raise
    return container


def exited(container) -> str | None:
    """Why ``container`` is not running ("exited with 1: <last log line>"), or None while it runs."""
    import docker.errors

    try:
        container.reload()
    except docker.errors.NotFound:
        return "the container is gone"
    restarts = container.attrs.get("RestartCount") or 0
    if container.status in ("running", "created") and not restarts:
        return None
    tail = container.logs(tail=3).decode(errors="replace").strip().replace("\n", " | ")
    if container.status in ("exited", "dead", "restarting"):
        what = f"the container exited with {container.attrs.get('State', {}).get('ExitCode')}"
    else:  # running again after a restart: its exit code is gone
        what = "the container exited"
    what += f" and was restarted {restarts} time(s)" if restarts else ""
    return what + (f": {tail[-300:]}" if tail else "")


#: Pauses between health probes: 10 ms after the first, growing by half each time to 50 ms (a freshly
#: started server answers within tens of ms; a plain script polls every 20 ms), then every 50 ms.
FIRST_PROBE_PAUSE_S, PROBE_PAUSE_S = 0.01, 0.05


def next_pause(pause: float) -> float:
    """The pause after ``pause`` between two probes (see ``FIRST_PROBE_PAUSE_S``)."""
    return min(PROBE_PAUSE_S, pause * 1.5)


def wait_healthy(url: str | None, deadline_s: float, probe_timeout_s: float = 2, container=None,
                 settle_s: float = 1.0) -> tuple[bool, str]:
    """Probe ``url`` at once, then after 10 ms, 15 ms, ... and every 50 ms until it answers 2xx, the
    deadline passes, or ``container`` exits (checked every 0.5 s: an exit ends the wait at once).
    Without a URL, the container must still be running after ``settle_s``. Returns (healthy, last
    observation)."""
    start = time.monotonic()
    end, next_check, pause = start + deadline_s, start + 0.5, FIRST_PROBE_PAUSE_S
    last = "no answer yet"
    if url is None:
        time.sleep(min(settle_s, deadline_s))
        why = exited(container) if container is not None else None
        return (why is None), (why or f"running after {min(settle_s, deadline_s):g}s (no health check)")
    with httpx.Client(timeout=probe_timeout_s, verify=tls.default_context()) as http:
        while time.monotonic() < end:
            try:
                resp = http.get(url, headers={"Connection": "close"})
                if 200 <= resp.status_code < 300:
                    return True, f"HTTP {resp.status_code} after {time.monotonic() - start:.2f}s"
                last = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if container is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + 0.5
                why = exited(container)
                if why:
                    return False, why
            time.sleep(pause)
            pause = next_pause(pause)
    return False, last


def health_url(engine: DockerHostTarget, release: ComponentRelease) -> str | None:
    if release.ports and release.health_path:
        return f"http://{engine.public_host}:{release.ports[0]}{release.health_path}"
    return None


@task(name="rollout-docker", task_run_name="rollout-{release.base_name}-{engine.name}")
def rollout_docker(engine: DockerHostTarget, registry: ContainerRegistry, release: ComponentRelease) -> RolloutResult:
    """Replace the role's containers on ``engine`` with ``release``, gated on health.

    A batch role runs once to completion; ``replicas: 0`` removes the role's containers. With host
    networking and ports the old containers stop first (a gap: the plan says so); otherwise the
    new ones start beside them (``tasks/deploy/surge.py``).

    Raises:
        DeployFailed: the new version failed (pull, create, start, exit, health); what ran before
            was put back and the message says whether it answers again.
    """
    from tasks.deploy.surge import rollout_surge, surge_possible

    values = load_runtime(release.runtime, f"components[{release.key}].runtime")
    with engine_session(engine) as client:
        pull_if_missing(client, registry, release.image)
        ensure_networks(client, release.runtime.networks, release.app)
        if release.kind == RoleKind.batch:
            return run_batch(client, engine, release, values)
        if release.replicas == 0:
            return scale_to_zero(client, engine, release)
        if surge_possible(engine, release):
            return rollout_surge(client, engine, release, values)
        return replace_with_gap(client, engine, release, values)


def replace_with_gap(client, engine: DockerHostTarget, release: ComponentRelease,
                     values: RuntimeValues) -> RolloutResult:
    """Stop the old containers (kept as ``*-previous``) while the new ones are created, start the
    new ones, wait for health; on any failure put the previous ones back and check that they answer."""
    logger = get_run_logger()
    specs = docker_container_specs(release, engine.network_mode, env=values.env(release.runtime))
    url = health_url(engine, release)
    previous: list = []
    started: list = []
    stale_specs = [s["name"] for s in specs]
    current = {c.name: c for c in role_containers(client, release)}  # ``*-previous`` ones keep their labels
    old_ones = [c for name, c in current.items() if name in stale_specs]
    previous_image = old_ones[0].labels.get(f"{OPSFLOW_LABEL}.image") if old_ones else None
    try:
        for old in old_ones:
            leftover = current.get(f"{old.name}-previous")
            if leftover is not None:
                leftover.remove(force=True)
            old.rename(f"{old.name}-previous")
            previous.append((old.name, old))
        # The old containers stop while the new ones are created (creating binds no port): an engine round
        # trip less in the gap. Both are done before any new container starts.
        with ContextThreadPool(max_workers=1, thread_name_prefix="stop-previous") as pool:
            stopping = pool.submit(lambda: [old.stop(timeout=10) for _, old in previous])
            try:
                for spec in specs:
                    started.append(create_container(client, spec, values))
            finally:
                stopping.result()
        for container in started:
            container.start()
        healthy, seen = wait_healthy(url, release.health_deadline_s, release.probe_timeout_s,
                                     container=started[0] if started else None)
        if not healthy:
            raise DeployFailed(seen if seen.startswith("the container") else
                               f"not healthy within {release.health_deadline_s:g}s (last probe of {url}: {seen})")
    except BaseException as exc:  # noqa: BLE001 - any failure (an interrupt too) restores, then is raised as DeployFailed
        why = values.redact(str(exc) if isinstance(exc, DeployFailed) else engine_error(exc))
        back = restore_previous(started, previous, url, release)
        raise DeployFailed(f"{release.base_name} {release.version} on {engine.name}: {why}; rolled back{back}") \
            from None
    for _, old in previous:
        old.remove(force=True)
    logger.info("%s %s is healthy on %s (%s)", release.base_name, release.version, engine.name, seen)
    return RolloutResult(release.key, release.version, previous_image, True, False, f"healthy ({seen})",
                         [c.name for c in started], replicas=len(started))


def restore_previous(started: list, previous: list, url: str | None, release: ComponentRelease) -> str:
    """Remove what this deploy started, rename and start the previous containers, and say whether
    the previous version answers again (probed at ``url``)."""
    import docker.errors

    for new in started:
        try:
            new.remove(force=True)
        except docker.errors.NotFound:
            pass
    if not previous:
        return "; nothing ran before"
    for name, old in previous:
        old.rename(name)
        old.start()
    image = previous[0][1].labels.get(f"{OPSFLOW_LABEL}.image")
    healthy, seen = wait_healthy(url, release.health_deadline_s, release.probe_timeout_s, container=previous[0][1])
    if healthy:
        return f"; the previous version ({image}) is serving again ({seen})"
    return f"; the previous version ({image}) was started again but does not answer ({seen}): look at it now"


def run_batch(client, engine: DockerHostTarget, release: ComponentRelease, values: RuntimeValues) -> RolloutResult:
    """Run a batch role once: ``<base>-run`` runs to completion within ``run_deadline_s``; the last
    run's container is kept (stopped) for its logs. Raises DeployFailed on a non-zero exit."""
    import requests.exceptions

    if release.schedule:
        raise DeployFailed(f"{release.base_name}: a schedule runs as a Kubernetes CronJob; on the Docker host "
                           f"{engine.name} a batch role runs once per deploy (remove its schedule)")
    [spec] = docker_container_specs(release, engine.network_mode, env=values.env(release.runtime), replicas=1)
    spec = {**spec, "name": f"{release.base_name}-run", "ports": None}
    if spec.get("network"):
        from tasks.deploy.bluegreen import ensure_network

        ensure_network(client, spec["network"], release.app, engine.public_host)
    earlier = find_container(client, spec["name"])
    previous_image = earlier.labels.get(f"{OPSFLOW_LABEL}.image") if earlier else None
    if earlier is not None:
        earlier.remove(force=True)
    started, container = time.monotonic(), None
    try:
        container = start_container(client, spec, values)
        status = container.wait(timeout=release.run_deadline_s)
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
        if container is not None:
            container.kill()
        raise DeployFailed(f"{release.base_name} {release.version} on {engine.name} did not finish within "
                           f"{release.run_deadline_s:g}s; it was stopped") from None
    except Exception as exc:  # noqa: BLE001 - translated (redacted) into the deploy's one error type
        raise DeployFailed(f"{release.base_name} {release.version} on {engine.name} could not run: "
                           f"{values.redact(engine_error(exc))}") from None
    code = status.get("StatusCode")
    took = time.monotonic() - started
    if code != 0:
        tail = values.redact(container.logs(tail=5).decode(errors="replace").strip())
        raise DeployFailed(f"{release.base_name} {release.version} on {engine.name} exited with {code} after "
                           f"{took:.1f}s: {tail[-600:]}")
    return RolloutResult(release.key, release.version, previous_image, True, False,
                         f"ran to completion (exit 0) in {took:.1f}s", [container.name], replicas=1)


def scale_to_zero(client, engine: DockerHostTarget, release: ComponentRelease) -> RolloutResult:
    """``replicas: 0``: remove the role's containers (and its proxy); nothing of it runs afterwards."""
    removed = role_containers(client, release)
    previous_image = next((c.labels.get(f"{OPSFLOW_LABEL}.image") for c in removed
                           if c.status == "running"), None)
    proxy = find_container(client, f"{release.base_name}-proxy")
    for container in [*removed, *([proxy] if proxy is not None else [])]:
        container.remove(force=True)
    message = (f"scaled to 0: removed {len(removed)} container(s)"
               + (f" of {previous_image}" if previous_image else "") + f"; nothing of {release.key} runs on "
               f"{engine.name} now")
    get_run_logger().info("%s %s", release.base_name, message)
    return RolloutResult(release.key, release.version, previous_image, True, False, message, [], replicas=0)
