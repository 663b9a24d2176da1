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

from blocks.application import DeployMethod
from blocks.fields import Cpu, HttpPath, ImageTag, Memory, Name

OPSFLOW_LABEL = "org.opsflow"


class ComponentRelease(BaseModel):
    """One component of a release: the image (by digest) and how to run and probe it."""

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
    method: DeployMethod = DeployMethod.rolling

    @property
    def base_name(self) -> str:
        return f"{self.app}-{self.component}"


def cpu_nano(cpu: str) -> int:
    return int(float(cpu[:-1]) * 1_000_000) if cpu.endswith("m") else int(float(cpu) * 1_000_000_000)


_MEM_FACTORS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
                "Ti": 2**40}


def memory_bytes(memory: str) -> int:
    number = memory.rstrip("kMGTPEi")
    return int(float(number) * _MEM_FACTORS[memory[len(number):]])


def docker_container_specs(release: ComponentRelease, network_mode: str = "host",
                           colour: str | None = None) -> list[dict]:
    """The containers of ``release`` on a Docker host: names, labels (app, component, version,
    colour), limits, restart policy.

    Rolling (no ``colour``): ``<app>-<component>-<i>``; ports are published on the engine's host
    (``bridge``) or bound directly (``host``), so a component with ports runs one replica per
    engine. Blue-green: ``<app>-<component>-<colour>-<i>`` on the application's own network,
    nothing published: the proxy (:func:`docker_proxy_spec`) owns the ports and forwards to them.
    """
    labels = {f"{OPSFLOW_LABEL}.app": release.app, f"{OPSFLOW_LABEL}.component": release.component,
              f"{OPSFLOW_LABEL}.version": release.version, f"{OPSFLOW_LABEL}.image": release.image}
    common = {"image": release.image, "nano_cpus": cpu_nano(release.cpu), "mem_limit": memory_bytes(release.memory),
              "restart_policy": {"Name": "unless-stopped"}}
    if colour:
        labels[f"{OPSFLOW_LABEL}.colour"] = colour
        return [{"name": f"{release.base_name}-{colour}-{i}", **common, "labels": labels,
                 "network": bluegreen_network(release.app), "ports": None}
                for i in range(max(release.replicas, 1))]
    replicas = min(release.replicas, 1) if release.ports else release.replicas
    return [{"name": f"{release.base_name}-{i}", **common, "labels": labels, "network_mode": network_mode,
             "ports": {f"{p}/tcp": p for p in release.ports} if network_mode != "host" else None}
            for i in range(replicas)]


def bluegreen_network(app: str) -> str:
    """The Docker network an application's blue-green containers and its proxies share."""
    return f"opsflow-{app}"


def docker_proxy_spec(release: ComponentRelease, proxy_image: str) -> dict:
    """The blue-green proxy of a component: publishes the component's ports and forwards each
    request to the live colour (see ``tasks/deploy/bluegreen_proxy.js``)."""
    return {"name": f"{release.base_name}-proxy", "image": proxy_image,
            "command": ["node", "/opsflow/bluegreen_proxy.js", "serve"],
            "environment": {"OPSFLOW_PROXY_PORTS": ",".join(str(p) for p in release.ports)},
            "labels": {f"{OPSFLOW_LABEL}.app": release.app, f"{OPSFLOW_LABEL}.component": release.component,
                       f"{OPSFLOW_LABEL}.role": "proxy"},
            "network": bluegreen_network(release.app), "ports": {f"{p}/tcp": p for p in release.ports},
            "restart_policy": {"Name": "unless-stopped"}}


def kubernetes_manifests(release: ComponentRelease, namespace: str, colour: str | None = None) -> list[dict]:
    """A Deployment (RollingUpdate, readiness probe, resources, progress deadline) and its Service.
    Blue-green: ``colour`` names the Deployment ``<name>-<colour>`` and the Service selects it."""
    name = release.base_name + (f"-{colour}" if colour else "")
    selector = {"app.kubernetes.io/name": release.base_name, **({"opsflow.org/colour": colour} if colour else {})}
    labels = {**selector, "app.kubernetes.io/part-of": release.app, "app.kubernetes.io/version": release.version[:63]}
    container: dict = {"name": release.component, "image": release.image,
                       "resources": {"requests": {"cpu": release.cpu, "memory": release.memory},
                                     "limits": {"cpu": release.cpu, "memory": release.memory}},
                       "ports": [{"containerPort": p} for p in release.ports]}
    if release.health_path and release.ports:
        container["readinessProbe"] = {"httpGet": {"path": release.health_path, "port": release.ports[0]},
                                       "periodSeconds": 2, "failureThreshold": 3}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"replicas": release.replicas, "selector": {"matchLabels": selector},
                 "progressDeadlineSeconds": int(release.health_deadline_s),
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": release.base_name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": release.app}},
        "spec": {"selector": selector, "ports": [{"port": p, "targetPort": p} for p in release.ports]},
    }
    return [deployment, service] if release.ports else [deployment]


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
