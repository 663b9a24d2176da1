"""Edge nodes that are docker-compose projects, the file side: the compose file a release plans
(its services' images by digest, env, secrets, labels, limits), its diff, writing and restoring it,
and the compose command line. The rollout (``up -d --no-deps`` for the release's services only, the
health gate, the restore on failure) is ``tasks/deploy/compose_rollout.py``.

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

Compose v1 is a Python program that imports ``distutils``; on Debian, setuptools' ``distutils``
shim (``distutils-precedence.pth``) then imports setuptools and ``pkg_resources`` on every run.
Where the script's interpreter still has the standard library's ``distutils`` (Python < 3.12), it
runs with ``SETUPTOOLS_USE_DISTUTILS=stdlib``: measured on Debian 12, ``docker-compose version``
0.46 s against 0.25 s (0.39 s of CPU against 0.21 s), on every ``up`` of a deploy.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from blocks import DockerHostTarget
from blocks.application import DeployMethod, RoleKind
from blocks.fields import memory_bytes
from opsflow.core.errors import CommandFailed, DeployFailed, InvalidInput
from opsflow.core.proc import run
from tasks.deploy.plan import ComponentRelease, restart_policy
from tasks.deploy.runtime import RuntimeValues

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


@functools.cache
def _v1_environment(program: str) -> tuple[tuple[str, str], ...]:
    """``SETUPTOOLS_USE_DISTUTILS=stdlib`` for a compose v1 script whose interpreter has the standard
    library's ``distutils`` (see the module docstring); nothing for anything else, or when unsure."""
    if "SETUPTOOLS_USE_DISTUTILS" in os.environ:
        return ()
    try:
        found = shutil.which(program)
        with open(found or "", "rb") as script:
            first = script.readline(256)
    except OSError:
        return ()
    shebang = re.match(rb"#!\s*(\S+)", first)
    interpreter = os.path.realpath(shebang.group(1).decode(errors="replace")) if shebang else ""
    version = re.search(r"python(3\.\d+)$", interpreter)
    if not version or int(version.group(1).split(".")[1]) >= 12:
        return ()
    stdlib = Path(interpreter).parent.parent / "lib" / f"python{version.group(1)}" / "distutils" / "__init__.py"
    return (("SETUPTOOLS_USE_DISTUTILS", "stdlib"),) if stdlib.is_file() else ()


def compose_environment(argv: list[str]) -> dict[str, str]:
    """What compose's command line runs with on top of the worker's environment."""
    return {} if argv[:1] == ["docker"] else dict(_v1_environment(argv[0]))


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
    """The health URL of a compose container (as listed after ``up``: the listing inspects each one, so
    its port bindings are there): its published host port for the first port."""
    if not (rel.ports and rel.health_path):
        return None
    if engine.network_mode == "host":
        return f"http://{engine.public_host}:{rel.ports[0]}{rel.health_path}"
    bound = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{rel.ports[0]}/tcp") or []
    return f"http://{engine.public_host}:{bound[0]['HostPort']}{rel.health_path}" if bound else None


def compose_command(engine: DockerHostTarget, *args: str, logger=None, secrets: list[str] = ()) -> str:
    """Run compose for the block's project; a failure is DeployFailed with the (redacted) output tail."""
    try:
        argv = compose_argv(engine, *args)
        return run(argv, env=compose_environment(argv), timeout=600, logger=logger, secrets=secrets,
                   hint=f"compose project {engine.compose_project} on {engine.name}")
    except CommandFailed as exc:
        raise DeployFailed(str(exc)) from None
