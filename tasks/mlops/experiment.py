"""Running the repository's experiment (its declared command or ``dvc repro``) and reading what it produced."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml
from prefect import get_run_logger, task

from opsflow.core.errors import InvalidInput, MlopsError, OpsflowError
from opsflow.core.proc import run
from tasks.mlops.champion import Candidate


@task(name="run-experiment", task_run_name="run-experiment")
def run_experiment(workdir: Path, command: list[str] | None = None, timeout: float = 900) -> Candidate:
    """Run the repo's declared command (or ``dvc repro`` when it has a ``dvc.yaml``); read metrics and params."""
    bindir = str(Path(sys.executable).parent)
    if command is None:
        if not (workdir / "dvc.yaml").exists():
            raise InvalidInput("the repository has no dvc.yaml and no experiment command was declared")
        command = [str(Path(bindir) / "dvc"), "repro"]
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        run(command, cwd=workdir, env=env, timeout=timeout, logger=get_run_logger(),
            hint="the experiment command failed: fix it in the branch and push again")
    except OpsflowError as exc:
        raise MlopsError(f"experiment failed: {exc}") from None
    metrics_file = workdir / "metrics.json"
    if not metrics_file.exists():
        raise MlopsError("the experiment wrote no metrics.json: make it write its metrics there")
    metrics = {k: float(v) for k, v in json.loads(metrics_file.read_text()).items()}
    plots = sorted(p.relative_to(workdir).as_posix() for p in (workdir / "plots").rglob("*") if p.is_file()) \
        if (workdir / "plots").is_dir() else []
    return Candidate(metrics=metrics, params=flat_params(workdir), plots=plots)


def flat_params(workdir: Path) -> dict[str, str]:
    """``params.yaml`` flattened to ``section.key -> str(value)``."""
    path = workdir / "params.yaml"
    out: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = str(value)

    if path.exists():
        walk("", yaml.safe_load(path.read_text()) or {})
    return out


