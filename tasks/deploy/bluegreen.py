"""Blue-green deploys on a Docker host (an edge node).

The new colour starts beside the live one on the application's network, is probed there, then
the component's proxy (``tasks/deploy/bluegreen_proxy.js``, which owns the published ports) is switched
to it with one file write, and after a drain period the old colour is stopped (kept, stopped,
until the next deploy replaces it). If the new colour is not healthy the proxy is never touched,
so the live version serves throughout.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
import time
from pathlib import Path

from prefect import get_run_logger, task

from blocks import ContainerRegistry, DockerHostTarget
from opsflow.core.errors import DeployFailed, InvalidInput, RemoteError
from tasks.deploy.docker_host import (
    RolloutResult,
    engine_session,
    find_container,
    pull_if_missing,
    wait_healthy,
)
from tasks.deploy.plan import (
    OPSFLOW_LABEL,
    ComponentRelease,
    bluegreen_network,
    docker_container_specs,
    docker_proxy_spec,
)
from tasks.images.base import ensure_base_image
from tasks.images.build import stream_build

PROXY_SCRIPT = Path(__file__).with_name("bluegreen_proxy.js")
UPSTREAM_DIR = "/run/opsflow"
COLOURS = ("blue", "green")


def proxy_dockerfile(base_tag: str) -> str:
    # COPY only (no RUN): on vfs every RUN layer is another full copy of the node rootfs.
    return (f"FROM {base_tag}\n"
            "COPY rootfs/ /\n"
            'CMD ["node", "/opsflow/bluegreen_proxy.js", "serve"]\n')


@task(name="ensure-bluegreen-proxy-image", task_run_name="ensure-proxy-image-{engine.name}", retries=1,
      retry_delay_seconds=5)
def ensure_proxy_image(engine: DockerHostTarget) -> str:
    """Build the blue-green proxy image on ``engine`` unless it is there; return its tag.

    The tag hashes the node base image and the proxy script, so a changed script is rebuilt.
    """
    logger = get_run_logger()
    base = ensure_base_image(engine, "node")
    dockerfile = proxy_dockerfile(base)
    digest = hashlib.sha256(dockerfile.encode() + PROXY_SCRIPT.read_bytes()).hexdigest()[:12]
    tag = f"opsflow/bluegreen-proxy:{digest}"
    client = engine.get_client()
    try:
        if find_image(client, tag):
            return tag
        with tempfile.TemporaryDirectory(prefix="opsflow-proxy-") as tmp:
            (Path(tmp) / "Dockerfile").write_text(dockerfile)
            rootfs = Path(tmp) / "rootfs"
            (rootfs / UPSTREAM_DIR.lstrip("/")).mkdir(parents=True)
            (rootfs / UPSTREAM_DIR.lstrip("/") / ".keep").touch()
            (rootfs / "opsflow").mkdir()
            (rootfs / "opsflow" / "bluegreen_proxy.js").write_bytes(PROXY_SCRIPT.read_bytes())
            stream_build(client, Path(tmp), tag, labels={"dev.opsflow.role": "bluegreen-proxy"}, logger=logger,
                         where=f"blue-green proxy image on {engine.name}")
    finally:
        client.close()
    logger.info("built the blue-green proxy image %s on %s", tag, engine.name)
    return tag


def find_image(client, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def read_upstream(proxy) -> list[str]:
    """The container names the proxy forwards to now (empty when it has none yet)."""
    import docker.errors

    try:
        stream, _ = proxy.get_archive(f"{UPSTREAM_DIR}/upstream")
    except docker.errors.NotFound:
        return []
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile("upstream")
        text = member.read().decode().strip() if member else ""
    return text.rstrip(";").split(",") if text.endswith(";") else []


def write_upstream(proxy, names: list[str]) -> None:
    """Point the proxy at ``names``: one file write, read by the proxy on every request."""
    data = (",".join(names) + ";\n").encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("upstream")
        info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    if not proxy.put_archive(UPSTREAM_DIR, buf.getvalue()):
        raise RemoteError(f"could not write the upstream list into {proxy.name}")


def colour_of(name: str, base_name: str) -> str | None:
    rest = name[len(base_name) + 1:] if name.startswith(base_name + "-") else ""
    return next((c for c in COLOURS if rest.startswith(c + "-")), None)


def probe_in_network(proxy, url: str, deadline_s: float) -> tuple[bool, str]:
    """Probe ``url`` (a container on the application's network) from inside the proxy container,
    which works the same on a remote engine, where the worker cannot reach container addresses."""
    code, output = proxy.exec_run(["node", "/opsflow/bluegreen_proxy.js", "probe", url, str(max(1, int(deadline_s)))])
    lines = (output or b"").decode(errors="replace").strip().splitlines()
    return code == 0, lines[-1] if lines else f"probe exited with {code}"


HOST_BINDING = "com.docker.network.bridge.host_binding_ipv4"


def ensure_network(client, name: str, app: str):
    """The application's bridge network; it publishes ports on the same host address as the
    engine's default bridge (dockerd ``--ip``), which user-defined networks do not inherit."""
    found = [n for n in client.networks.list(names=[name]) if n.name == name]
    if found:
        return found[0]
    binding = (client.networks.get("bridge").attrs.get("Options") or {}).get(HOST_BINDING)
    return client.networks.create(name, driver="bridge", labels={f"{OPSFLOW_LABEL}.app": app},
                                  options={HOST_BINDING: binding} if binding else None)


def _run(client, spec: dict):
    kwargs = {k: v for k, v in spec.items() if v is not None and k != "name"}
    return client.containers.run(name=spec["name"], detach=True, **kwargs)


@task(name="rollout-blue-green", task_run_name="blue-green-{release.component}-{engine.name}")
def rollout_blue_green(  # noqa: PLR0912 - each step next to the undo of what it changed
        engine: DockerHostTarget, registry: ContainerRegistry, release: ComponentRelease,
        proxy_image: str, drain_s: float = 2.0, switch_check_s: float = 15.0) -> RolloutResult:
    """Deploy ``release`` blue-green on ``engine``: start the other colour, probe it, switch the
    proxy, drain, stop the old colour.

    Raises:
        InvalidInput: the engine uses host networking, or the component has no port to switch.
        DeployFailed: the new colour was not healthy (the live one never stopped serving), or the
            public endpoint failed after the switch (the proxy was switched back).
    """
    if engine.network_mode != "bridge":
        raise InvalidInput(f"blue-green on {engine.name} needs network_mode=bridge (its block says "
                           f"{engine.network_mode}): each colour needs its own network address")
    if not release.ports:
        raise InvalidInput(f"{release.base_name} has no port: blue-green switches traffic, use method=rolling")
    logger = get_run_logger()
    port, path = release.ports[0], release.health_path or "/"
    started: list = []
    displaced: list = []
    created_proxy = None
    with engine_session(engine) as client:
        pull_if_missing(client, registry, release.image)
        ensure_network(client, bluegreen_network(release.app), release.app)
        proxy = find_container(client, f"{release.base_name}-proxy")
        live_names = read_upstream(proxy) if proxy is not None else []
        live = [c for c in (find_container(client, n) for n in live_names) if c is not None]
        live_colour = colour_of(live_names[0], release.base_name) if live_names else None
        colour = "green" if live_colour == "blue" else "blue"
        for leftover in client.containers.list(all=True, filters={"label": [
                f"{OPSFLOW_LABEL}.app={release.app}", f"{OPSFLOW_LABEL}.component={release.component}",
                f"{OPSFLOW_LABEL}.colour={colour}"]}):
            leftover.remove(force=True)
        if proxy is None:
            # First blue-green deploy: rolling containers hold the ports; they stop (kept for the
            # rollback) while the proxy takes the ports over, a short gap that only happens once.
            for spec in docker_container_specs(release, engine.network_mode):
                old = find_container(client, spec["name"])
                if old is not None:
                    old.stop(timeout=10)
                    displaced.append(old)
            proxy = created_proxy = _run(client, docker_proxy_spec(release, proxy_image))
            logger.info("started the blue-green proxy %s on %s (ports %s)", proxy.name, engine.name, release.ports)
        elif proxy.status != "running":
            proxy.start()
        for spec in docker_container_specs(release, colour=colour):
            started.append(_run(client, spec))
        logger.info("started %s %s as %s beside %s", release.base_name, release.version, colour,
                    live_colour or "nothing")
        end = time.monotonic() + release.health_deadline_s
        for container in started:
            healthy, seen = probe_in_network(proxy, f"http://{container.name}:{port}{path}", end - time.monotonic())
            if not healthy:
                _undo(started, displaced, created_proxy)
                keeps = f"the live version ({live_colour}) kept serving" if live else "nothing was serving before"
                raise DeployFailed(f"{release.base_name} {release.version} ({colour}) on {engine.name} was not healthy "
                                   f"within {release.health_deadline_s:g}s (last probe of {path}: {seen}); "
                                   f"it was removed and {keeps}")
        write_upstream(proxy, [c.name for c in started])
        logger.info("switched %s on %s to %s (%s)", release.base_name, engine.name, colour, release.version)
        public = f"http://{engine.public_host}:{port}{path}"
        healthy, seen = wait_healthy(public, switch_check_s)
        if not healthy:
            if live:
                write_upstream(proxy, [c.name for c in live])
            _undo(started, displaced, created_proxy)
            raise DeployFailed(f"{public} did not answer through the proxy after the switch to {colour} ({seen}); "
                               + ("switched back to " + live_colour if live else "rolled back"))
        time.sleep(drain_s)  # requests already forwarded to the old colour finish
        for old in live:
            old.stop(timeout=10)
        for old in displaced:
            old.remove(force=True)
        previous_image = live[0].labels.get(f"{OPSFLOW_LABEL}.image") if live else (
            displaced[0].labels.get(f"{OPSFLOW_LABEL}.image") if displaced else None)
        return RolloutResult(release.component, release.version, previous_image, True, False,
                             f"healthy ({seen}), {colour} is live", [c.name for c in started])


def _undo(started: list, displaced: list, created_proxy) -> None:
    """Remove the new colour and a proxy this deploy created; containers it displaced get their ports back."""
    for container in started:
        container.remove(force=True)
    if created_proxy is not None:
        created_proxy.remove(force=True)
    for old in displaced:
        old.start()
