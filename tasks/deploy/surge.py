"""Rollouts that start the new containers beside the old ones on a Docker host: rolling with surge
and blue-green. Traffic never reaches a version that has not answered its health check, and the
old containers serve until traffic has moved away from them, so nothing fails in between.

Components with ports need bridge networking: the proxy (``tasks/deploy/bluegreen.py``) owns the
published ports. Rolling starts one new replica at a time, probes it from inside the application's
network and puts it in the proxy's upstream list in place of an old one; blue-green starts the
whole new colour, probes it and switches the list at once, and keeps the old colour stopped until
the next deploy. Components without ports (workers) surge on any engine: the new containers must
be running after a settle time, then the old ones go. Any failure removes what this deploy started
and puts the upstream list back; the old containers never stopped.
"""

from __future__ import annotations

import secrets
import time

from prefect import get_run_logger

from blocks import DockerHostTarget
from blocks.application import DeployMethod
from opsflow.core import tls
from opsflow.core.errors import DeployFailed
from tasks.deploy.bluegreen import (
    colour_of,
    ensure_network,
    ensure_proxy_image,
    probe_in_network,
    read_upstream,
    wait_drained,
    write_upstream,
)
from tasks.deploy.docker_host import (
    FIRST_PROBE_PAUSE_S,
    RolloutResult,
    engine_error,
    exited,
    find_container,
    next_pause,
    role_containers,
    start_container,
    wait_healthy,
)
from tasks.deploy.plan import (
    OPSFLOW_LABEL,
    ComponentRelease,
    bluegreen_network,
    docker_container_specs,
    docker_proxy_spec,
)
from tasks.deploy.runtime import RuntimeValues

SWITCH_CHECK_S = 15.0


def surge_possible(engine: DockerHostTarget, release: ComponentRelease) -> bool:
    """New containers can start beside the old ones: bridge networking (the proxy owns the ports),
    a component without ports, or blue-green (which the flow allows on bridge engines only)."""
    return release.method == DeployMethod.blue_green or engine.network_mode == "bridge" or not release.ports


def proxy_token(proxy) -> str | None:
    """The token a proxy accepts probe requests with (``OPSFLOW_PROXY_TOKEN``; older proxies have none)."""
    for item in (proxy.attrs.get("Config") or {}).get("Env") or []:
        if item.startswith("OPSFLOW_PROXY_TOKEN="):
            return item.split("=", 1)[1] or None
    return None


def probe_new(proxy, container, release: ComponentRelease, deadline: float,
              public_host: str | None = None) -> tuple[bool, str]:
    """Probe a new container, which is not live yet, until it answers 2xx, exits, or ``deadline``.

    Through the proxy's published port with the proxy's token and the container's name (paced as
    ``wait_healthy``: at once, 10 ms later, then up to every 50 ms; nothing started per probe); a proxy
    without a token (an older one) is asked from inside with ``docker exec`` in slices of 1 s. A
    container that exits ends the wait at once."""
    if proxy is None or not release.health_path:
        return wait_healthy(None, max(0.1, deadline - time.monotonic()), container=container)
    token = proxy_token(proxy)
    if token and public_host:
        return _probe_through_proxy(container, release, deadline, public_host, token)
    url = f"http://{container.name}:{release.ports[0]}{release.health_path}"
    seen = "no answer yet"
    while time.monotonic() < deadline:
        why = exited(container)
        if why:
            return False, why
        healthy, seen = probe_in_network(proxy, url, 1)
        if healthy:
            return True, seen
    return False, exited(container) or seen  # a crash loop explains a timeout better than the timeout


def _probe_through_proxy(container, release: ComponentRelease, deadline: float, public_host: str,
                         token: str) -> tuple[bool, str]:
    import httpx

    url = f"http://{public_host}:{release.ports[0]}{release.health_path}"
    headers = {"X-Opsflow-Probe": container.name, "X-Opsflow-Probe-Token": token, "Connection": "close"}
    start, next_check, seen = time.monotonic(), time.monotonic() + 0.5, "no answer yet"
    pause = FIRST_PROBE_PAUSE_S
    with httpx.Client(timeout=release.probe_timeout_s, verify=tls.default_context()) as http:
        while time.monotonic() < deadline:
            try:
                resp = http.get(url, headers=headers)
                if 200 <= resp.status_code < 300:
                    return True, f"HTTP {resp.status_code} after {time.monotonic() - start:.2f}s"
                seen = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                seen = type(exc).__name__
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 0.5
                why = exited(container)
                if why:
                    return False, why
            time.sleep(pause)
            pause = next_pause(pause)
    return False, exited(container) or seen


def start_proxy(client, release: ComponentRelease, image: str, network: str | None = None):
    """Create and start the proxy (on ``network``, else the application's); one that cannot start is
    removed (never left in state Created)."""
    spec = docker_proxy_spec(release, image)
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    # the probe token: made here, not in the spec, so no plan shows it
    kwargs["environment"] = {**spec["environment"], "OPSFLOW_PROXY_TOKEN": secrets.token_hex(16)}
    if network:
        kwargs["network"] = network
    proxy = client.containers.create(name=spec["name"], **kwargs)
    try:
        proxy.start()
    except BaseException:
        proxy.remove(force=True)
        raise
    return proxy


def rollout_surge(client, engine: DockerHostTarget, release: ComponentRelease,
                  values: RuntimeValues) -> RolloutResult:
    """Start ``release`` beside what runs, move traffic to it, then retire the old containers.

    Raises:
        DeployFailed: a new container failed (create, start, exit, health) or the public endpoint
            did not answer after the switch; the old containers kept or got the traffic back.
    """
    state = _Surge(client, engine, release, values)
    try:
        seen = state.run()
    except BaseException as exc:  # noqa: BLE001 - any failure (an interrupt too) is undone, then raised as DeployFailed
        why = values.redact(str(exc) if isinstance(exc, DeployFailed) else
                            f"{release.base_name} {release.version} on {engine.name}: {engine_error(exc)}")
        raise DeployFailed(f"{why}; it was removed and {state.undo()}") from None
    how = state.retire()
    get_run_logger().info("%s %s on %s: %s (%s)", release.base_name, release.version, engine.name, how, seen)
    return RolloutResult(release.key, release.version, state.previous_image, True, False, f"healthy ({seen}), {how}",
                         [c.name for c in state.started], replicas=len(state.started))


class _Surge:
    """One surge rollout's state: what ran, what it started, whether traffic moved (for the undo)."""

    def __init__(self, client, engine: DockerHostTarget, release: ComponentRelease, values: RuntimeValues):
        self.client, self.engine, self.release, self.values = client, engine, release, values
        self.blue_green = release.method == DeployMethod.blue_green
        current = role_containers(client, release)
        self.proxy = find_container(client, f"{release.base_name}-proxy") if release.ports else None
        live_names = (read_upstream(self.proxy) if self.proxy is not None
                      else [c.name for c in current if c.status == "running"])
        self.live = [c for c in current if c.name in live_names]
        self.live_colour = colour_of(live_names[0], release.base_name) if live_names else None
        self.colour = "green" if self.live_colour == "blue" else "blue"
        for leftover in [c for c in current if colour_of(c.name, release.base_name) == self.colour
                         and c not in self.live]:
            leftover.remove(force=True)
        self.retired = [c for c in current if c not in self.live
                        and colour_of(c.name, release.base_name) not in (self.colour, None)]
        self.plain = [c for c in current if colour_of(c.name, release.base_name) is None and c.status == "running"]
        self.previous_image = self.live[0].labels.get(f"{OPSFLOW_LABEL}.image") if self.live else None
        self.displaced: list = []
        self.started: list = []
        self.created_proxy = None
        self.moved = False

    def _ensure_proxy(self) -> None:
        if self.proxy is None:
            # First deploy behind a proxy: containers of an earlier rolling deploy hold the ports.
            # They stop (kept for the rollback) while the proxy takes the ports over: a gap, once.
            self.displaced = self.plain
            for old in self.displaced:
                old.stop(timeout=10)
            self.proxy = self.created_proxy = start_proxy(self.client, self.release, ensure_proxy_image(self.engine))
            self.live = []
            get_run_logger().info("started the proxy %s on %s (ports %s)", self.proxy.name, self.engine.name,
                                  self.release.ports)
        elif self.proxy.status != "running":
            self.proxy.start()

    def run(self) -> str:
        """Start, probe and switch; returns the last health observation."""
        release = self.release
        specs = docker_container_specs(release, self.engine.network_mode, colour=self.colour,
                                       env=self.values.env(release.runtime))
        if release.ports or self.engine.network_mode == "bridge":
            ensure_network(self.client, bluegreen_network(release.app), release.app, self.engine.public_host)
        if release.ports:
            self._ensure_proxy()
        end = time.monotonic() + release.health_deadline_s
        seen = "nothing started"
        for spec in specs:
            new = start_container(self.client, spec, self.values)
            self.started.append(new)
            healthy, seen = probe_new(self.proxy, new, release, end, self.engine.public_host)
            if not healthy:
                what = seen if seen.startswith("the container") else (
                    f"was not healthy within {release.health_deadline_s:g}s (last probe of {release.health_path}: "
                    f"{seen})")
                raise DeployFailed(f"{release.base_name} {release.version} ({self.colour}) on {self.engine.name}: "
                                   f"{what}")
            if self.proxy is not None and not self.blue_green:
                self._switch([c.name for c in self.started] + [c.name for c in self.live[len(self.started):]])
        if self.proxy is None:
            return seen
        # the final list: blue-green switches here at once; rolling drops old replicas beyond the new count
        self._switch([c.name for c in self.started])
        public = f"http://{self.engine.public_host}:{release.ports[0]}{release.health_path or '/'}"
        healthy, seen = wait_healthy(public, SWITCH_CHECK_S, release.probe_timeout_s)
        if not healthy:
            raise DeployFailed(f"{public} did not answer through the proxy after the switch to {self.colour} "
                               f"({seen})")
        return seen

    def _switch(self, names: list[str]) -> None:
        write_upstream(self.proxy, names)
        self.moved = True

    def undo(self) -> str:
        """Put traffic back on the old containers and remove what this deploy started; says what serves."""
        if self.moved and self.live:
            write_upstream(self.proxy, [c.name for c in self.live])
        for container in self.started:
            container.remove(force=True)
        if self.created_proxy is not None:
            self.created_proxy.remove(force=True)
        for old in self.displaced:
            old.start()
        if self.live:
            return f"the live version ({self.live_colour or self.previous_image}) kept serving"
        return "the previous containers were started again" if self.displaced else "nothing was serving before"

    def retire(self) -> str:
        """Once the proxy has no request open on them (at most ``drain_s``), stop (blue-green: kept)
        or remove the old containers; says what is live."""
        if self.live and self.proxy is not None:
            wait_drained(self.proxy, [c.name for c in self.started], [c.name for c in self.live],
                         self.release.drain_s)
        for old in self.live:
            if self.blue_green:
                old.stop(timeout=10)
            else:
                old.remove(force=True)
        for old in [*self.displaced, *(self.retired if not self.blue_green else [])]:
            old.remove(force=True)
        if self.blue_green:
            return f"{self.colour} is live"
        return f"{len(self.started)} replica(s) started beside the old ones, no gap"
