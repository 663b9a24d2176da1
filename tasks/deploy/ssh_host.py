"""Deploys to hosts over SSH: the generated script runs in the remote shell, fed on stdin.

The private key and the pinned host key go into 0600 files of a private temporary directory
(removed afterwards); the script is never part of the command line. Host keys are checked
strictly: a host without ``known_hosts`` in its block is refused.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from prefect import get_run_logger, task

from blocks import SshHostTarget
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


@task(name="run-deploy-script", task_run_name="run-deploy-script-{host.name}")
def run_deploy_script(host: SshHostTarget, script: str, timeout_s: float = 1800) -> str:
    """Run ``script`` on ``host`` (bash on Linux, PowerShell on Windows); its output goes to the
    run's log. Raises DeployFailed with the output tail when the script exits non-zero (the
    generated scripts roll back themselves before they do)."""
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
        remote = (["powershell", "-NoProfile", "-NonInteractive", "-Command", "-"] if host.os.value == "windows"
                  else ["bash", "-s"])
        try:
            return run(ssh_argv(host, key_file, known, remote), stdin_text=script, timeout=timeout_s, logger=logger,
                       hint=f"the deploy script failed on {host.name}")
        except CommandFailed as exc:
            raise DeployFailed(f"deploy script on {host.name} exited with {exc.returncode}: "
                               f"{exc.output_tail[-1500:]}") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
