"""Deploys to hosts over SSH: the generated script runs in the remote shell, fed on stdin.

The private key and the pinned host key go into 0600 files of a private temporary directory
(removed afterwards); the script is never part of the command line. Host keys are checked
strictly: a host without ``known_hosts`` in its block is refused. For a registry with a login, the
script that is run (not the one the plan shows) starts with a ``docker login`` into a throw-away
``DOCKER_CONFIG`` removed on exit, the password written to its stdin by the shell's own ``printf``
(no process argument on either host carries it; the run's log masks it).
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from pathlib import Path

from prefect import get_run_logger, task

from blocks import ContainerRegistry, SshHostTarget
from opsflow.core.errors import CommandFailed, DeployFailed, InvalidInput
from opsflow.core.proc import run


def ssh_argv(host: SshHostTarget, key_file: Path | None, known_hosts: Path, remote: list[str]) -> list[str]:
    """The ``ssh`` command line (no secret in it: the key is a file path)."""
    argv = ["ssh", "-p", str(host.port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", f"ConnectTimeout={int(host.connect_timeout)}",
            "-o", "ServerAliveInterval=15", "-o", "IdentitiesOnly=yes"]
    if key_file is not None:
        argv += ["-i", str(key_file)]
    return [*argv, f"{host.user}@{host.hostname}", "--", *remote]


def with_registry_login(script: str, registry: ContainerRegistry | None, windows: bool) -> str:
    """``script`` preceded by a login to ``registry`` (when it has one) into a temporary Docker config."""
    if registry is None or not registry.username or registry.password is None:
        return script
    password = registry.password.get_secret_value()
    if windows:
        def ps(value: str) -> str:
            return "'" + value.replace("'", "''") + "'"

        return (f"$env:DOCKER_CONFIG = Join-Path ([IO.Path]::GetTempPath()) ([Guid]::NewGuid())\n"
                f"New-Item -ItemType Directory $env:DOCKER_CONFIG | Out-Null\n"
                f"try {{\n{ps(password)} | docker login --username {ps(registry.username)} --password-stdin "
                f"{ps(registry.host)} | Out-Null\n{script}}} finally {{\n"
                "Remove-Item -Recurse -Force $env:DOCKER_CONFIG\n}\n")
    q = shlex.quote
    return ("set -euo pipefail\nexport DOCKER_CONFIG=\"$(mktemp -d)\"\ntrap 'rm -rf \"$DOCKER_CONFIG\"' EXIT\n"
            f"printf '%s' {q(password)} | docker login --username {q(registry.username)} --password-stdin "
            f"{q(registry.host)} >/dev/null\n{script}")


@task(name="run-deploy-script", task_run_name="run-deploy-script-{host.name}")
def run_deploy_script(host: SshHostTarget, script: str, timeout_s: float = 1800,
                      registry: ContainerRegistry | None = None) -> str:
    """Run ``script`` on ``host`` (bash on Linux, PowerShell on Windows), logged in to ``registry`` first
    when it has a login; its output goes to the run's log. Raises DeployFailed with the output tail when
    the script exits non-zero (the generated scripts roll back themselves before they do)."""
    if not host.known_hosts:
        raise InvalidInput(f"SSH host block {host.name!r} has no known_hosts: pin the host key "
                           "(ssh-keyscan -p PORT HOST) before deploying to it")
    logger = get_run_logger()
    workdir = Path(tempfile.mkdtemp(prefix="opsflow-ssh-"))
    try:
        known = workdir / "known_hosts"
        known.write_text(host.known_hosts.rstrip("\n") + "\n")
        key_file = None
        if host.private_key is not None:
            key_file = workdir / "id"
            key_file.touch(mode=0o600)
            key_file.write_text(host.private_key.get_secret_value().rstrip("\n") + "\n")
        windows = host.os.value == "windows"
        stdin = with_registry_login(script, registry, windows)
        remote = ["powershell", "-NoProfile", "-NonInteractive", "-Command", "-"] if windows else ["bash", "-s"]
        secrets = [registry.password.get_secret_value()] if registry is not None and registry.password else []
        try:
            return run(ssh_argv(host, key_file, known, remote), stdin_text=stdin,
                       timeout=timeout_s, logger=logger, secrets=secrets,
                       hint=f"the deploy script failed on {host.name}")
        except CommandFailed as exc:
            raise DeployFailed(f"deploy script on {host.name} exited with {exc.returncode}: "
                               f"{exc.output_tail[-1500:]}") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
