"""Deploy plans, pure: what a manual deploy will run on each kind of target.

Docker hosts get container specs, Kubernetes clusters manifests, Linux hosts a bash script and
Windows hosts a PowerShell script. Every value from input is validated by the models and
quoted for the shell that reads it (``shlex.quote`` for bash, single-quoted literals for
PowerShell); nothing is pasted into a script unquoted.
"""

from __future__ import annotations

import difflib
import json
import shlex

from pydantic import BaseModel, Field

from blocks.application import SERVICE_ROLE, Autoscale, DeployMethod, Ingress, RoleKind, RuntimeConfig
from blocks.fields import Cpu, CronSchedule, HttpPath, ImageTag, Memory, Name, cpu_nanos, memory_bytes

OPSFLOW_LABEL = "org.opsflow"
ROLE_LABEL = f"{OPSFLOW_LABEL}.run-role"


class ComponentRelease(BaseModel):
    """One run role of one component in a release: the image (by digest) and how to run and probe it."""

    app: Name
    component: Name
    image: str = Field(pattern=r"^[a-z0-9][a-z0-9._:/-]*@sha256:[0-9a-f]{64}$", description="repository@digest")
    version: ImageTag = Field(description="Tag or short digest shown to people.")
    replicas: int = Field(default=1, ge=0, le=100)
    cpu: Cpu = "250m"
    memory: Memory = "256Mi"
    ports: list[int] = Field(default_factory=list)
    health_path: HttpPath | None = "/healthz"
    health_deadline_s: float = Field(default=60, gt=0, le=3600)
    probe_timeout_s: float = Field(default=2, gt=0, le=60)
    drain_s: float = Field(default=2.0, ge=0, le=600, description="Seconds in-flight requests get on the old "
                           "version after traffic moved away from it.")
    method: DeployMethod = DeployMethod.rolling
    role: Name = SERVICE_ROLE
    kind: RoleKind = RoleKind.service
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    schedule: CronSchedule | None = None
    run_deadline_s: float = Field(default=600, gt=0, le=86400)
    ingress: Ingress | None = None
    autoscale: Autoscale | None = None
    compose_service: Name | None = None

    @property
    def base_name(self) -> str:
        """``<app>-<component>`` for the ``service`` role, ``<app>-<component>-<role>`` for the others."""
        suffix = "" if self.role == SERVICE_ROLE else f"-{self.role}"
        return f"{self.app}-{self.component}{suffix}"

    @property
    def key(self) -> str:
        """``component`` or ``component/role``: how results and plans name this release."""
        return self.component if self.role == SERVICE_ROLE else f"{self.component}/{self.role}"

    @property
    def service_name(self) -> str:
        """The service in a compose project (``compose_service``, else the component's name; plus ``-<role>``)."""
        suffix = "" if self.role == SERVICE_ROLE else f"-{self.role}"
        return f"{self.compose_service or self.component}{suffix}"

    def labels(self) -> dict[str, str]:
        """opsflow's labels on every container of this release (found again by them)."""
        return {f"{OPSFLOW_LABEL}.app": self.app, f"{OPSFLOW_LABEL}.component": self.component,
                ROLE_LABEL: self.role, f"{OPSFLOW_LABEL}.version": self.version,
                f"{OPSFLOW_LABEL}.image": self.image}


def cpu_nano(cpu: str) -> int:
    """Docker's NanoCpus for a CPU quantity (see blocks.fields.cpu_nanos)."""
    return cpu_nanos(cpu)


def restart_policy(release: ComponentRelease) -> dict:
    """The runtime's policy, else unless-stopped for services and no for batch runs."""
    name = release.runtime.restart_policy
    name = name.value if name else ("no" if release.kind == RoleKind.batch else "unless-stopped")
    return {"Name": name, **({"MaximumRetryCount": 3} if name == "on-failure" else {})}


def docker_container_specs(release: ComponentRelease, network_mode: str = "host", colour: str | None = None,
                           env: dict[str, str] | None = None, replicas: int | None = None) -> list[dict]:
    """The containers of ``release`` on a Docker host: names, labels (app, component, role, version,
    colour), limits, restart policy and the runtime configuration (``env`` is the environment to
    set: the real one at deploy time, secrets as placeholders in a plan).

    Without ``colour`` (host networking, where two containers cannot hold one port):
    ``<base>-<i>``, ports bound directly, so a component with ports runs one replica per engine.
    With a ``colour`` (bridge networking, or no ports: the new containers start beside the old
    ones): ``<base>-<colour>-<i>`` on the application's own network, nothing published: the proxy
    (:func:`docker_proxy_spec`) owns the ports and forwards to them.
    """
    runtime = release.runtime
    labels = {**runtime.labels, **release.labels()}
    common: dict = {"image": release.image, "nano_cpus": cpu_nanos(release.cpu),
                    "mem_limit": memory_bytes(release.memory), "restart_policy": restart_policy(release),
                    "environment": dict(env if env is not None else runtime.env) or None,
                    "entrypoint": runtime.command, "command": runtime.args, "init": runtime.init or None,
                    "volumes": {v.source: {"bind": v.target, "mode": "ro" if v.read_only else "rw"}
                                for v in runtime.volumes} or None,
                    "networks": list(runtime.networks) or None,
                    "secret_files": sorted(f.path for f in runtime.secret_files) or None}
    count = release.replicas if replicas is None else replicas
    if colour:
        labels[f"{OPSFLOW_LABEL}.colour"] = colour
        uses_app_network = bool(release.ports) or network_mode == "bridge"
        return [{"name": f"{release.base_name}-{colour}-{i}", **common, "labels": labels,
                 **({"network": bluegreen_network(release.app)} if uses_app_network else
                    {"network_mode": network_mode}), "ports": None}
                for i in range(count)]
    count = min(count, 1) if release.ports else count
    # bridge: the application's own network, never Docker's default one (an engine started with
    # --bridge=none has none; user-defined networks work there as well)
    where = {"network": bluegreen_network(release.app)} if network_mode == "bridge" else {"network_mode": network_mode}
    return [{"name": f"{release.base_name}-{i}", **common, "labels": labels, **where,
             "ports": {f"{p}/tcp": p for p in release.ports} if network_mode != "host" else None}
            for i in range(count)]


def bluegreen_network(app: str) -> str:
    """The Docker network an application's blue-green containers and its proxies share."""
    return f"opsflow-{app}"


def docker_proxy_spec(release: ComponentRelease, proxy_image: str) -> dict:
    """The proxy of a component on a bridge-networked engine: publishes the component's ports and
    forwards each request to the live containers (see ``tasks/deploy/bluegreen_proxy.js``)."""
    return {"name": f"{release.base_name}-proxy", "image": proxy_image,
            "command": ["node", "/opsflow/bluegreen_proxy.js", "serve"],
            "environment": {"OPSFLOW_PROXY_PORTS": ",".join(str(p) for p in release.ports)},
            "labels": {f"{OPSFLOW_LABEL}.app": release.app, f"{OPSFLOW_LABEL}.component": release.component,
                       f"{OPSFLOW_LABEL}.role": "proxy", ROLE_LABEL: release.role},
            "network": bluegreen_network(release.app), "ports": {f"{p}/tcp": p for p in release.ports},
            "restart_policy": {"Name": "unless-stopped"}, "init": True}


def bash_script(release: ComponentRelease) -> str:
    """A bash script for a Linux host running Docker: pull by digest, replace with a health gate,
    put the previous container back when the new one is not healthy in time."""
    q = shlex.quote
    port = release.ports[0] if release.ports else 0
    lines = [
        "#!/usr/bin/env bash", "set -euo pipefail",
        f"name={q(release.base_name)}", f"image={q(release.image)}", f"version={q(release.version)}",
        f"health_url={q(f'http://127.0.0.1:{port}{release.health_path}') if port and release.health_path else q('')}",
        f"deadline={int(release.health_deadline_s)}",
        'docker pull "$image"',
        ('if docker container inspect "$name" >/dev/null 2>&1; then docker rename "$name" "$name-previous"; '
        'docker stop "$name-previous" >/dev/null; fi'),
        (f'docker run -d --name "$name" --restart unless-stopped --network host '
        f'--cpus {q(str(cpu_nano(release.cpu) / 1e9))} --memory {q(str(memory_bytes(release.memory)))} '
        f'--label {q(f"{OPSFLOW_LABEL}.app={release.app}")} '
        '--label "org.opsflow.version=$version" "$image" >/dev/null'),
        'healthy=0',
        'for _ in $(seq "$deadline"); do',
        '  if [ -z "$health_url" ] || curl -fsS --max-time 2 "$health_url" >/dev/null; then healthy=1; break; fi',
        '  sleep 1', 'done',
        ('if [ "$healthy" = 1 ]; then docker rm -f "$name-previous" >/dev/null 2>&1 || true; '
         'echo "deployed $version"; exit 0; fi'),
        'echo "new version not healthy within ${deadline}s; rolling back" >&2',
        'docker rm -f "$name" >/dev/null',
        ('if docker container inspect "$name-previous" >/dev/null 2>&1; then docker rename "$name-previous" "$name"; '
        'docker start "$name" >/dev/null; echo "previous version is serving again" >&2; fi'),
        "exit 1",
    ]
    return "\n".join(lines) + "\n"


def _ps(value: str) -> str:
    """A PowerShell single-quoted literal (a quote inside is doubled)."""
    return "'" + value.replace("'", "''") + "'"


def powershell_script(release: ComponentRelease) -> str:
    """The same rollout for a Windows host running Docker, in PowerShell."""
    port = release.ports[0] if release.ports else 0
    url = f"http://127.0.0.1:{port}{release.health_path}" if port and release.health_path else ""
    return "\n".join([
        "$ErrorActionPreference = 'Stop'",
        f"$name = {_ps(release.base_name)}", f"$image = {_ps(release.image)}", f"$version = {_ps(release.version)}",
        f"$healthUrl = {_ps(url)}", f"$deadline = {int(release.health_deadline_s)}",
        "docker pull $image",
        "docker container inspect $name *> $null",
        ("if ($LASTEXITCODE -eq 0) { docker rename $name \"$name-previous\"; "
         "docker stop \"$name-previous\" | Out-Null }"),
        ("docker run -d --name $name --restart unless-stopped --label \"org.opsflow.version=$version\" "
         "$image | Out-Null"),
        "$healthy = $false",
        "for ($i = 0; $i -lt $deadline; $i++) {",
        "  if (-not $healthUrl) { $healthy = $true; break }",
        ("  try { Invoke-WebRequest -UseBasicParsing -TimeoutSec 2 $healthUrl | Out-Null; $healthy = $true; break } "
         "catch { Start-Sleep 1 }"),
        "}",
        ("if ($healthy) { docker rm -f \"$name-previous\" 2>$null | Out-Null; "
         "Write-Output \"deployed $version\"; exit 0 }"),
        "Write-Error \"new version not healthy within $deadline s; rolling back\" -ErrorAction Continue",
        "docker rm -f $name | Out-Null",
        "docker rename \"$name-previous\" $name; docker start $name | Out-Null",
        "exit 1",
    ]) + "\n"


def spec_diff(current: list[dict], planned: list[dict], what: str) -> str:
    """A unified diff of what runs now and what the plan runs, for people to read."""
    def lines(specs: list[dict]) -> list[str]:
        return json.dumps(specs, indent=2, sort_keys=True, default=str).splitlines(keepends=True)

    return "".join(difflib.unified_diff(lines(current), lines(planned), f"{what} (running)", f"{what} (planned)"))
