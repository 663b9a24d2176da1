"""Running the repository's experiment (its declared command, or ``dvc repro``) in its own environment.

The command runs with the venv's ``bin`` first on PATH and an environment built from nothing
(``environment.experiment_environment``): no Prefect API URL or key, no stack settings, no cloud credentials.
``dvc repro`` is the venv's own DVC when the repository's requirements bring it (dvclive does), else the
worker's, running the stages with the venv's ``python``. The DVC remote's credentials reach ``dvc repro``
only when the pipeline reads or writes remote data (``repro_remote``), through DVC's own configuration: the
checkout's ``.dvc/config.local`` (git-ignored by DVC, mode 0600), removed when the command ends.

A failed experiment raises ``ExperimentFailed`` with the cause (the last exception line of its output) and
its last lines, redacted; the PR comment and the run's state message show them.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from prefect import get_run_logger, task

from blocks import ObjectStore
from opsflow.core.errors import CommandFailed, ExperimentFailed, InvalidInput
from opsflow.core.proc import run
from tasks.mlops.config import MlConfig
from tasks.mlops.data import remote_config
from tasks.mlops.environment import ExperimentEnv, experiment_environment, hold_environment

LAST_LINES = 20
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure)|KeyboardInterrupt)(:.*)?$")
_URL = re.compile(r"^(remote|[a-z][a-z0-9+]*)://")


@dataclass
class ExperimentRun:
    command: list[str]
    seconds: float
    with_remote: bool


def failure_cause(lines: list[str]) -> str:
    """The line that says why a command failed (pure): the last Python exception line, else DVC's last
    ``ERROR:`` line, else the last line."""
    text = [line.strip() for line in lines if line.strip()]
    for pattern in (_EXCEPTION_LINE, re.compile(r"^ERROR:")):
        for line in reversed(text):
            if pattern.match(line):
                return line
    return text[-1] if text else "no output"


def repro_needs_remote(workdir: Path) -> bool:
    """Whether a stage of ``dvc.yaml`` reads or writes remote data (a ``remote://`` or URL dependency/output)."""
    path = workdir / "dvc.yaml"
    if not path.exists():
        return False
    try:
        stages = (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
    except yaml.YAMLError:
        return False  # DVC itself will say what is wrong with it

    def urls(node) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("deps", "outs") and isinstance(value, list):
                    for item in value:
                        name = next(iter(item), "") if isinstance(item, dict) else item
                        if isinstance(name, str) and _URL.match(name):
                            yield name
                else:
                    yield from urls(value)

    return any(True for _ in urls(stages))


@contextlib.contextmanager
def remote_credentials(workdir: Path, store: ObjectStore) -> Iterator[None]:
    """The object store's keys for the checkout's DVC remotes in ``.dvc/config.local`` (DVC's own per-machine
    config, git-ignored, mode 0600) for the ``with`` block; the file is removed afterwards."""
    from dvc.repo import Repo

    local = workdir / ".dvc" / "config.local"
    fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    try:
        with Repo(str(workdir)) as repo:
            names = set(repo.config.get("remote", {})) or {repo.config["core"].get("remote")}
            with repo.config.edit("local") as conf:
                for name in filter(None, names):
                    conf["remote"][name] = {**conf["remote"].get(name, {}), **remote_config(store)}
        yield
    finally:
        local.unlink(missing_ok=True)


def repro_argv(env: ExperimentEnv) -> list[str]:
    """``dvc repro`` with the environment's own DVC, else the worker's."""
    own = Path(env.bindir) / "dvc"
    return [str(own if own.exists() else Path(sys.executable).parent / "dvc"), "repro"]


@task(name="run-experiment", task_run_name="run-experiment")
def run_experiment(workdir: Path, env: ExperimentEnv, ml: MlConfig, store: ObjectStore | None = None,
                   timeout: float = 3600) -> ExperimentRun:
    """Run the declared ``command`` (or ``dvc repro``) in the repository's environment, holding it meanwhile.

    Args:
        workdir: the checkout, its DVC data pulled.
        env: the environment from ``prepare_environment``.
        ml: the repository's opsflow-ml.yaml.
        store: the DVC remote's object store (its keys reach ``dvc repro`` only when the pipeline needs them).
        timeout: seconds the experiment may take.
    Returns:
        The command run, how long it took, and whether it had the remote's credentials.
    Raises:
        ExperimentFailed: the command failed or timed out (with its cause and last lines, redacted).
        InvalidInput: no command is declared and there is no dvc.yaml.
    """
    logger = get_run_logger()
    if ml.command is None and not (workdir / "dvc.yaml").exists():
        raise InvalidInput("the repository has no dvc.yaml and opsflow-ml.yaml declares no command")
    wants = repro_needs_remote(workdir) if ml.repro_remote == "auto" else bool(ml.repro_remote)
    with_remote = ml.command is None and wants and store is not None
    secrets = list(remote_config(store).values()) if store is not None else []
    started = time.monotonic()
    with hold_environment(workdir, env.spec, logger) as held, \
            tempfile.TemporaryDirectory(prefix="opsflow-experiment-") as home:
        (Path(home) / "tmp").mkdir()
        command = list(ml.command) if ml.command else repro_argv(held)
        shown = " ".join([Path(command[0]).name, *command[1:]])
        logger.info("running `%s` in %s%s", shown, held.venv or "the worker's Python",
                    " with the DVC remote's credentials" if with_remote else "")
        credentials = remote_credentials(workdir, store) if with_remote else contextlib.nullcontext()
        try:
            with credentials:
                run(command, cwd=workdir, env=experiment_environment(held, Path(home), ml.env), isolated=True,
                    secrets=secrets, timeout=timeout, logger=logger)
        except CommandFailed as exc:
            lines = [line for line in exc.output_tail.splitlines() if line.strip()][-LAST_LINES:]
            what = "timed out" if exc.returncode is None else f"exited with {exc.returncode}"
            raise ExperimentFailed(f"experiment failed: `{shown}` {what}: {failure_cause(lines)}; fix it in the "
                                   f"branch and push again", lines) from None
    return ExperimentRun(command, round(time.monotonic() - started, 2), with_remote)
