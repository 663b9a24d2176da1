"""The proxy of a component on a bridge-networked Docker host (an edge node), used by rolling
(surge) and blue-green deploys (``tasks/deploy/surge.py``).

The proxy (``tasks/deploy/bluegreen_proxy.js`` on opsflow's node base image) owns the published
ports and forwards each request to the containers named in its upstream file; switching traffic
is one file write, read on every request. New containers are probed from inside the proxy, on the
application's network, which works the same on a remote engine.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
import time
from pathlib import Path

from prefect import get_run_logger, task

from blocks import DockerHostTarget
from opsflow.core.errors import RemoteError
from tasks.deploy.plan import OPSFLOW_LABEL
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


def read_inflight(proxy) -> dict | None:
    """The proxy's report: which upstream list it serves and the open requests on other containers."""
    import json

    import docker.errors

    try:
        stream, _ = proxy.get_archive(f"{UPSTREAM_DIR}/inflight")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile("inflight")
            return json.loads(member.read()) if member else None
    except (docker.errors.NotFound, ValueError, KeyError):
        return None


def wait_drained(proxy, names: list[str], old: list[str], max_s: float) -> tuple[bool, float]:
    """Wait until the proxy serves ``names`` and has no request open on ``old`` (at most ``max_s``);
    returns (drained, seconds waited). A proxy that does not report (an older one) waits ``max_s``."""
    start = time.monotonic()
    expected = ",".join(names) + ";"
    while time.monotonic() - start < max_s:
        report = read_inflight(proxy)
        if report and report.get("live") == expected and not any(
                (report.get("draining") or {}).get(name) for name in old):
            return True, time.monotonic() - start
        time.sleep(0.05)
    return False, time.monotonic() - start


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


def ensure_network(client, name: str, app: str, public_host: str | None = None):
    """The application's bridge network. It publishes ports on the same host address as the
    engine's default bridge (dockerd ``--ip``), which user-defined networks do not inherit; on an
    engine without a default bridge (``--bridge=none``, the local stack's) on ``public_host`` when
    that is an address, so a node that serves on 127.0.0.1 publishes nothing on other interfaces."""
    import ipaddress

    import docker.errors

    found = [n for n in client.networks.list(names=[name]) if n.name == name]
    if found:
        return found[0]
    try:
        binding = (client.networks.get("bridge").attrs.get("Options") or {}).get(HOST_BINDING)
    except docker.errors.NotFound:
        try:
            binding = str(ipaddress.IPv4Address(public_host or ""))
        except ValueError:
            binding = None
    return client.networks.create(name, driver="bridge", labels={f"{OPSFLOW_LABEL}.app": app},
                                  options={HOST_BINDING: binding} if binding else None)
