"""Edge nodes that are docker-compose projects: a release sets its services' images (by digest), env
and secrets in the project's compose file, ``up -d --no-deps`` runs for those services only (the
others are not restarted), a health gate follows, and any failure restores the previous file and
brings the services up as they were.

The compose file is the node's own (``compose_file``) or one opsflow owns under ``compose_root``;
the worker runs on the node, so it reads and writes the file directly. Secrets never enter the
compose file: env files become 0600 files beside it (``env_file:``) and secret files read-only
bind mounts, named by their fingerprint so the previous version still finds its own after a
rollback. The plan artifact is the diff of the compose file.

Rolling recreates a service's container (compose stops the old one first: a gap while a published
port changes hands). Blue-green (bridge networking, the service publishing no ports itself) adds
the new container beside the old one (``up --scale N+1 --no-recreate``), probes it inside the
project's network from opsflow's proxy (which publishes the ports), switches the proxy, drains and
removes the old container: no gap. Commands run as argv lists through ``opsflow.core.proc.run``;
``docker compose`` (the plugin) where present, else Debian's ``docker-compose`` v1.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from prefect import get_run_logger, task

from blocks import ContainerRegistry, DockerHostTarget
from blocks.application import DeployMethod, RoleKind
from blocks.fields import memory_bytes
from opsflow.core.errors import CommandFailed, DeployFailed, InvalidInput
from opsflow.core.proc import run
from tasks.deploy.bluegreen import ensure_proxy_image, read_upstream, write_upstream
from tasks.deploy.docker_host import (
    RolloutResult,
    engine_error,
    engine_session,
    find_container,
    pull_if_missing,
    run_batch,
    wait_healthy,
)
from tasks.deploy.plan import OPSFLOW_LABEL, ComponentRelease, docker_proxy_spec, restart_policy
from tasks.deploy.runtime import RuntimeValues, load_runtime
from tasks.deploy.surge import probe_new

COMPOSE_FILE = "docker-compose.yml"
PROJECT_LABEL, SERVICE_LABEL = "com.docker.compose.project", "com.docker.compose.service"


def project_file(engine: DockerHostTarget) -> Path:
    """The node's compose file: the block's ``compose_file``, or the one opsflow owns."""
    if engine.compose_file:
        return Path(engine.compose_file)
    return Path(engine.compose_root) / engine.compose_project / COMPOSE_FILE


def secrets_dir(engine: DockerHostTarget) -> Path:
    return Path(engine.compose_root) / engine.compose_project / "secrets"


def project_label(project: str) -> str:
    """The project name as compose writes it in labels and network names (lowercase, [-_a-z0-9])."""
    return re.sub(r"[^-_a-z0-9]", "", project.lower())


@functools.cache
def _detected_compose() -> tuple[str, ...]:
    try:
        found = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20, check=False)
        if found.returncode == 0:
            return ("docker", "compose")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return ("docker-compose",)


def compose_argv(engine: DockerHostTarget, *args: str) -> list[str]:
    """``docker compose`` / ``docker-compose`` with the engine, project and file: no secret in it."""
    base = list(engine.compose_command or _detected_compose())
    conn = ["-H", engine.base_url]
    if engine.tls_ca_cert or engine.tls_client_cert:
        conn += ["--tlsverify"] if engine.tls_ca_cert else ["--tls"]
        conn += [*(["--tlscacert", engine.tls_ca_cert] if engine.tls_ca_cert else []),
                 *(["--tlscert", engine.tls_client_cert, "--tlskey", engine.tls_client_key]
                   if engine.tls_client_cert else [])]
    if base[:2] == ["docker", "compose"]:  # the plugin takes the engine as docker's global options
        head = ["docker", *conn, "compose", *base[2:]]
    else:
        head = [*base, *conn]
    return [*head, "-p", engine.compose_project, "-f", str(project_file(engine)), *args]


def read_compose(path: Path, owned: bool) -> tuple[str | None, dict]:
    """The compose file's text and document; an owned file that does not exist yet is empty.
    Raises InvalidInput when it does not parse or has no ``services`` mapping."""
    if not path.exists():
        if owned:
            return None, {"version": "2.4", "services": {}}
        raise InvalidInput(f"compose_file {path} does not exist on this node; fix the Docker host block")
    try:
        text = path.read_text()
        doc = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"compose_file {path} does not parse as YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise InvalidInput(f"compose_file {path} has no 'services' mapping")
    return text, doc


def _mapping(value, what: str) -> dict:
    """A compose ``environment``/``labels`` list (``K=V``) or mapping, as a mapping."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): ("" if v is None else str(v)) for k, v in value.items()}
    if isinstance(value, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in map(str, value))
    raise InvalidInput(f"the service's {what} is neither a list nor a mapping")


def env_file_text(env: dict[str, str], where: str) -> str:
    """A compose env file: every value single-quoted (neither compose v1 nor v2 interpolates those)."""
    lines = []
    for key, value in sorted(env.items()):
        if "'" in value or "\n" in value or "\r" in value:
            raise InvalidInput(f"{where}: {key}'s value has a quote or a line break, which compose env files "
                               "cannot carry; mount it as a secret file instead")
        lines.append(f"{key}='{value}'")
    return "\n".join(lines) + "\n"


def _file_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", path.strip("/"))


@dataclass
class ComposeChange:
    """What a release does to a compose project: the file before and after, and the secret files to write."""

    path: Path
    before: str | None
    after: str
    services: list[str]
    secret_files: dict[Path, tuple[str, int]]  # host path -> (content, mode); never shown

    @property
    def diff(self) -> str:
        return "".join(difflib.unified_diff((self.before or "").splitlines(keepends=True),
                                            self.after.splitlines(keepends=True),
                                            f"{self.path} (now)", f"{self.path} (planned)"))


def _set_runtime(svc: dict, rel: ComponentRelease, owned: bool, v3: bool) -> None:
    runtime = rel.runtime
    env = {**_mapping(svc.get("environment"), "environment"), **runtime.env}
    if env:
        svc["environment"] = env
    svc["labels"] = {**_mapping(svc.get("labels"), "labels"), **runtime.labels, **rel.labels()}
    if runtime.command is not None:
        svc["entrypoint"] = list(runtime.command)
    if runtime.args is not None:
        svc["command"] = list(runtime.args)
    if runtime.init is not None:
        svc["init"] = runtime.init
    if runtime.restart_policy is not None or owned:
        svc["restart"] = restart_policy(rel)["Name"]
    if runtime.networks:
        svc["networks"] = list(dict.fromkeys([*(svc.get("networks") or ["default"]), *runtime.networks]))
    mounts = [f"{v.source}:{v.target}{':ro' if v.read_only else ''}" for v in runtime.volumes]
    if v3:
        svc.setdefault("deploy", {}).setdefault("resources", {})["limits"] = {
            "cpus": str(int(rel.cpu[:-1]) / 1000 if rel.cpu.endswith("m") else float(rel.cpu)),
            "memory": str(memory_bytes(rel.memory))}
    else:
        svc["cpus"] = int(rel.cpu[:-1]) / 1000 if rel.cpu.endswith("m") else float(rel.cpu)
        svc["mem_limit"] = memory_bytes(rel.memory)
    if mounts:
        svc["volumes"] = [m for m in (svc.get("volumes") or []) if not isinstance(m, str)
                          or m.split(":")[1:2] not in [[v.target] for v in runtime.volumes]] + mounts


def _set_secrets(svc: dict, rel: ComponentRelease, value: RuntimeValues, sdir: Path) -> dict[Path, tuple[str, int]]:
    """Point the service at its secret files under ``sdir`` (an env file, read-only file mounts),
    named by fingerprint; earlier ones of opsflow's are replaced. Returns the files to write."""
    secret_files: dict[Path, tuple[str, int]] = {}
    fingerprint = value.fingerprint.removeprefix("sha256:")
    given = svc.get("env_file")
    env_files = [f for f in (given if isinstance(given, list) else [given] if given else [])
                 if not str(f).startswith(str(sdir) + "/")]
    if value.secret_env:
        env_path = sdir / f"env-{fingerprint}"
        secret_files[env_path] = (env_file_text({k: v.get_secret_value() for k, v in value.secret_env.items()},
                                                f"components[{rel.key}].runtime.env_files"), 0o600)
        env_files.append(str(env_path))
    if env_files:
        svc["env_file"] = env_files
    else:
        svc.pop("env_file", None)
    mounts = [m for m in (svc.get("volumes") or []) if not str(m).startswith(str(sdir) + "/")]
    for target, (content, mode) in value.files.items():
        host = sdir / f"{_file_name(target)}-{fingerprint}"
        secret_files[host] = (content.get_secret_value(), mode)
        mounts.append(f"{host}:{target}:ro")
    if mounts:
        svc["volumes"] = mounts
    return secret_files


def plan_compose(engine: DockerHostTarget, releases: list[ComponentRelease],
                 values: dict[str, RuntimeValues]) -> ComposeChange:
    """The compose file with the releases' services set (image by digest, env, secrets, labels,
    limits), pure but for reading the file. Raises InvalidInput for a file that does not parse,
    a service it lacks (the field that names it), or blue-green on a service publishing ports."""
    path, owned = project_file(engine), not engine.compose_file
    before, doc = read_compose(path, owned)
    new = copy.deepcopy(doc)
    v3 = str(new.get("version", "")).startswith("3")
    secret_files: dict[Path, tuple[str, int]] = {}
    names = []
    for rel in releases:
        if rel.kind == RoleKind.batch:
            continue  # batch roles run as one-off containers beside the project (run_batch)
        name = rel.service_name
        names.append(name)
        svc = new["services"].get(name)
        if svc is None:
            if not owned:
                raise InvalidInput(f"compose_file {path} has no service {name!r} (components[{rel.key}]."
                                   "compose_service names it; the component's name when empty)")
            svc = new["services"][name] = {}
        if not isinstance(svc, dict):
            raise InvalidInput(f"compose_file {path}: service {name!r} is not a mapping")
        svc["image"] = rel.image
        blue_green = rel.method == DeployMethod.blue_green
        if owned:
            svc.pop("ports", None)
            if engine.network_mode == "host":
                svc["network_mode"] = "host"
            elif rel.ports and not blue_green:
                svc["ports"] = [f"{p}:{p}" for p in rel.ports]
        elif blue_green and svc.get("ports"):
            raise InvalidInput(f"blue-green on the compose project {engine.compose_project}: service {name!r} "
                               "publishes ports itself; remove its 'ports' (opsflow's proxy publishes them) or "
                               "deploy with method=rolling")
        _set_runtime(svc, rel, owned, v3)
        secret_files.update(_set_secrets(svc, rel, values.get(rel.key) or RuntimeValues(),
                                         secrets_dir(engine) / name))
    after = yaml.safe_dump(new, sort_keys=False, default_flow_style=False)
    return ComposeChange(path=path, before=before, after=after, services=names, secret_files=secret_files)


def _write_private(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_compose(change: ComposeChange) -> None:
    """The secret files (0700 directory), then the compose file, each replaced atomically."""
    for path, (content, mode) in change.secret_files.items():
        _write_private(path, content, mode)
    change.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = change.path.with_name(f".{change.path.name}.opsflow-tmp")
    tmp.write_text(change.after)
    os.replace(tmp, change.path)


def restore_compose(change: ComposeChange) -> None:
    """The compose file as it was (an owned file that did not exist is removed)."""
    if change.before is None:
        change.path.unlink(missing_ok=True)
        return
    tmp = change.path.with_name(f".{change.path.name}.opsflow-tmp")
    tmp.write_text(change.before)
    os.replace(tmp, change.path)


def service_containers(client, engine: DockerHostTarget, service: str, running: bool = True) -> list:
    """The containers compose runs for ``service`` in the block's project."""
    labels = [f"{PROJECT_LABEL}={project_label(engine.compose_project)}", f"{SERVICE_LABEL}={service}"]
    return sorted(client.containers.list(all=not running, filters={"label": labels}), key=lambda c: c.name)


def published_url(engine: DockerHostTarget, container, rel: ComponentRelease) -> str | None:
    """The health URL of a compose container: its published host port for the first port."""
    if not (rel.ports and rel.health_path):
        return None
    if engine.network_mode == "host":
        return f"http://{engine.public_host}:{rel.ports[0]}{rel.health_path}"
    container.reload()
    bound = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{rel.ports[0]}/tcp") or []
    return f"http://{engine.public_host}:{bound[0]['HostPort']}{rel.health_path}" if bound else None


def _compose(engine: DockerHostTarget, *args: str, logger=None, secrets: list[str] = ()) -> str:
    try:
        return run(compose_argv(engine, *args), timeout=600, logger=logger, secrets=secrets,
                   hint=f"compose project {engine.compose_project} on {engine.name}")
    except CommandFailed as exc:
        raise DeployFailed(str(exc)) from None


@task(name="plan-compose", task_run_name="plan-compose-{engine.name}")
def compose_diff(engine: DockerHostTarget, releases: list[ComponentRelease]) -> str:
    """The compose-file diff a deploy would make on ``engine`` (the plan artifact shows it): secret
    files appear as their paths, named by fingerprint, never as content. Raises InvalidInput
    before anything changes when the file does not parse or lacks a service."""
    values = {r.key: load_runtime(r.runtime, f"components[{r.key}].runtime") for r in releases}
    return plan_compose(engine, releases, values).diff


@task(name="rollout-compose", task_run_name="rollout-compose-{engine.name}")
def rollout_compose(engine: DockerHostTarget, registry: ContainerRegistry,
                    releases: list[ComponentRelease]) -> list[RolloutResult]:
    """Deploy ``releases`` into the engine's compose project: write the services' new settings,
    ``up -d --no-deps`` them (blue-green: beside the old containers, behind the proxy), health-gate,
    and on any failure restore the file and bring the services back as they were.

    Raises:
        DeployFailed: a service failed (pull, up, exit, health); the compose file is back as it was
            and the message says whether the previous version answers.
    """
    logger = get_run_logger()
    values = {r.key: load_runtime(r.runtime, f"components[{r.key}].runtime") for r in releases}
    secrets = [s for v in values.values() for s in v.secrets()]
    change = plan_compose(engine, releases, values)
    services = [r for r in releases if r.kind == RoleKind.service]
    results: dict[str, RolloutResult] = {}
    with engine_session(engine) as client:
        for rel in releases:
            pull_if_missing(client, registry, rel.image)
        before = {r.key: service_containers(client, engine, r.service_name) for r in services}
        previous = {k: (c[0].labels.get(f"{OPSFLOW_LABEL}.image") or c[0].attrs["Config"]["Image"]) if c else None
                    for k, c in before.items()}
        blue_green = [r for r in services if r.method == DeployMethod.blue_green and r.ports]
        rolling = [r for r in services if r not in blue_green]
        write_compose(change)
        try:
            if rolling:
                _compose(engine, "up", "-d", "--no-deps", *[r.service_name for r in rolling], logger=logger,
                         secrets=secrets)
                for rel in rolling:
                    results[rel.key] = _gate(client, engine, rel, previous[rel.key])
            for rel in blue_green:
                results[rel.key] = _beside(client, engine, rel, before[rel.key], previous[rel.key], secrets)
        except BaseException as exc:  # noqa: BLE001 - any failure (an interrupt too) restores, then raises DeployFailed
            why = redact_all(str(exc) if isinstance(exc, DeployFailed) else engine_error(exc), secrets)
            back = _restore(client, engine, change, rolling, before, logger, secrets)
            raise DeployFailed(f"compose project {engine.compose_project} on {engine.name}: {why}; the compose "
                               f"file is back as it was{back}") from None
        _forget_old_secrets(engine, change)
        for rel in releases:
            if rel.kind == RoleKind.batch:
                results[rel.key] = run_batch(client, engine, rel, values[rel.key])
    return [results[r.key] for r in releases]


def redact_all(text: str, secrets: list[str]) -> str:
    from opsflow.core.redact import redact

    return redact(text, secrets)


def _gate(client, engine: DockerHostTarget, rel: ComponentRelease, previous: str | None) -> RolloutResult:
    """Health of a recreated service: each of its containers runs the release and answers."""
    containers = [c for c in service_containers(client, engine, rel.service_name, running=False)
                  if c.labels.get(f"{OPSFLOW_LABEL}.image") == rel.image]
    if not containers:
        raise DeployFailed(f"service {rel.service_name} has no container of {rel.version} after `up`")
    seen = ""
    for container in containers:
        healthy, seen = wait_healthy(published_url(engine, container, rel), rel.health_deadline_s,
                                     rel.probe_timeout_s, container=container)
        if not healthy:
            raise DeployFailed(f"{rel.service_name} {rel.version} was not healthy within {rel.health_deadline_s:g}s "
                               f"({seen})")
    return RolloutResult(rel.key, rel.version, previous, True, False, f"healthy ({seen})",
                         [c.name for c in containers], replicas=len(containers))


def _ensure_proxy(client, engine: DockerHostTarget, rel: ComponentRelease):
    """opsflow's proxy for a compose service: on the project's default network, publishing the ports."""
    proxy = find_container(client, f"{rel.base_name}-proxy")
    if proxy is not None:
        if proxy.status != "running":
            proxy.start()
        return proxy
    spec = docker_proxy_spec(rel, ensure_proxy_image(engine))
    spec["network"] = f"{project_label(engine.compose_project)}_default"
    proxy = client.containers.create(name=spec.pop("name"), **spec)
    try:
        proxy.start()
    except BaseException:
        proxy.remove(force=True)
        raise
    return proxy


def _beside(client, engine: DockerHostTarget, rel: ComponentRelease, live: list, previous: str | None,
            secrets: list[str]) -> RolloutResult:
    """Blue-green on compose: one more container of the service (the new image) beside the live ones,
    probed in the network, then the proxy switches to it and the old ones go after a drain."""
    logger = get_run_logger()
    live_ids = {c.id for c in live}
    _compose(engine, "up", "-d", "--no-deps", "--no-recreate", "--scale", f"{rel.service_name}={len(live) + 1}",
             rel.service_name, logger=logger, secrets=secrets)
    proxy = _ensure_proxy(client, engine, rel)
    new = [c for c in service_containers(client, engine, rel.service_name, running=False) if c.id not in live_ids]
    moved = False
    try:
        if len(new) != 1 or new[0].labels.get(f"{OPSFLOW_LABEL}.image") != rel.image:
            raise DeployFailed(f"`up --scale` did not start one container of {rel.version} for {rel.service_name}")
        healthy, seen = probe_new(proxy, new[0], rel, time.monotonic() + rel.health_deadline_s)
        if not healthy:
            raise DeployFailed(f"{rel.service_name} {rel.version} was not healthy within {rel.health_deadline_s:g}s "
                               f"({seen}); the live containers kept serving")
        old_upstream = read_upstream(proxy)
        write_upstream(proxy, [new[0].name])
        moved = True
        public = f"http://{engine.public_host}:{rel.ports[0]}{rel.health_path or '/'}"
        healthy, seen = wait_healthy(public, 15, rel.probe_timeout_s)
        if not healthy:
            raise DeployFailed(f"{public} did not answer through the proxy after the switch ({seen})")
    except BaseException:
        if moved:
            write_upstream(proxy, old_upstream or [c.name for c in live])
        for container in new:
            container.remove(force=True)
        raise
    if live:
        time.sleep(rel.drain_s)
    for old in live:
        old.remove(force=True)
    return RolloutResult(rel.key, rel.version, previous, True, False, f"healthy ({seen}), switched with no gap",
                         [new[0].name], replicas=1)


def _restore(client, engine: DockerHostTarget, change: ComposeChange, rolling: list[ComponentRelease],
             before: dict[str, list], logger, secrets: list[str]) -> str:
    """Put the compose file back and the rolling services' previous containers up; say whether they answer."""
    restore_compose(change)
    if not rolling:
        return "; the live containers were never touched"
    existed = [r for r in rolling if before[r.key]]
    for rel in rolling:
        if not before[rel.key]:
            for container in service_containers(client, engine, rel.service_name, running=False):
                container.remove(force=True)
    if not existed:
        return "; nothing ran before"
    try:
        _compose(engine, "up", "-d", "--no-deps", *[r.service_name for r in existed], logger=logger,
                 secrets=secrets)
    except DeployFailed as exc:
        return f"; bringing the previous services up failed too: {exc}"
    said = []
    for rel in existed:
        containers = service_containers(client, engine, rel.service_name)
        healthy, seen = (wait_healthy(published_url(engine, containers[0], rel), rel.health_deadline_s,
                                      rel.probe_timeout_s, container=containers[0])
                         if containers else (False, "no container"))
        said.append(f"{rel.service_name} {'answers again' if healthy else 'does not answer'} ({seen})")
    return "; previous services up: " + ", ".join(said)


def _forget_old_secrets(engine: DockerHostTarget, change: ComposeChange) -> None:
    """Remove secret files neither the new file nor the one before it names (the previous version's
    stay, for a rollback)."""
    root = secrets_dir(engine)
    if not root.exists():
        return
    named = (change.before or "") + change.after
    for path in root.rglob("*"):
        if path.is_file() and str(path) not in named:
            path.unlink(missing_ok=True)
