"""What an ``opsflow`` worker is told beyond Prefect's worker options: what its zygote preloads, how
often it polls, how long a SIGTERM waits, where runs' working directories and its records go.

Prefect's own options (pool, queues, name, ``--limit``, heartbeat interval) are ``BaseWorker``'s.
``opsflow worker start`` sets these from its command line; ``prefect worker start --type opsflow``
takes them from the environment (``OPSFLOW_WORKER_*``, see :meth:`WorkerSettings.from_env`).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path

from opsflow.core.errors import InvalidInput
from opsflow.core.paths import PROJECT_ROOT

DEFAULT_LIMIT = 4


def default_worker_name(pool: str) -> str:
    """``<pool>-<hostname>``, the name the stack's health check looks for."""
    return f"{pool}-{socket.gethostname()}"


def default_preload(project_root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """Every module under ``flows/`` of the checkout, as dotted names (``flows.smoke``, ...)."""
    flows_dir = project_root / "flows"
    if not flows_dir.is_dir():
        return ()
    return tuple(f"flows.{p.stem}" for p in sorted(flows_dir.glob("*.py")) if not p.stem.startswith("_"))


#: Libraries the flows' tasks import only when they run, in the order the zygote imports them once ready
#: (opsflow/worker/zygote.py): the object store and clone (every pipeline), the Docker SDK (images, deploys),
#: Kubernetes targets, DVC and MLflow (MLOps). Those not installed (an edge node has neither) are skipped. The
#: zygote must stay single-threaded for its forks to be safe: tests/unit/worker/test_zygote_warm.py checks it.
DEFAULT_WARM = ("boto3", "git", "docker", "kubernetes.dynamic", "dvc.repo", "mlflow.tracking", "mlflow.models")
#: What a deploy-only worker (an edge node's) needs of them.
EDGE_WARM = ("boto3", "docker", "kubernetes.dynamic")


def parse_warm(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``--warm``/``OPSFLOW_WORKER_WARM`` values (each may be comma-separated); ``none`` alone: nothing."""
    names = tuple(m.strip() for v in values for m in v.split(",") if m.strip())
    if names == ("none",):
        return ()
    bad = [m for m in names if not all(part.isidentifier() for part in m.split("."))]
    if bad:
        raise InvalidInput(f"--warm takes module names (e.g. mlflow.tracking) or none, not {', '.join(bad)}")
    return names


def warm_from(given: list[str] | tuple[str, ...], env: dict[str, str]) -> tuple[str, ...]:
    """What the zygote warms: the ``--warm`` values when given, else ``OPSFLOW_WORKER_WARM``, else ``DEFAULT_WARM``."""
    if given:
        return parse_warm(given)
    if env.get("OPSFLOW_WORKER_WARM"):
        return parse_warm([env["OPSFLOW_WORKER_WARM"]])
    return DEFAULT_WARM


@dataclass(frozen=True)
class WorkerSettings:
    """Settings of one worker process; built by the CLI (or from the environment), read by the worker."""

    #: Flow runs at a time when ``--limit`` is not given (Prefect's workers have no limit by default;
    #: a build server with two cores should not start twenty builds at once).
    limit: int = DEFAULT_LIMIT
    preload: tuple[str, ...] | None = None
    #: Imported by the zygote once ready, while idle (``DEFAULT_WARM``).
    warm: tuple[str, ...] = DEFAULT_WARM
    project_root: Path = PROJECT_ROOT
    #: Poll period while the event stream is connected (a safety net for missed events; runs falling due
    #: between two polls are woken for at their time) ...
    poll_interval: float = 5.0
    #: ... and while it is not (then the poll is the only source).
    fallback_poll_interval: float = 0.25
    #: How long SIGTERM/SIGINT waits for running flow runs before killing them.
    shutdown_timeout: float = 60.0
    #: Where runs' working directories go unless the pool or deployment says (job variable working_dir_root).
    workdir_root: Path | None = None
    #: Where the worker keeps its run records (default: under the system's temporary directory, per worker name).
    state_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise InvalidInput(f"--limit must be at least 1, got {self.limit}")
        for value, what in ((self.poll_interval, "poll interval"), (self.fallback_poll_interval, "fallback poll"),
                            (self.shutdown_timeout, "shutdown timeout")):
            if value <= 0:
                raise InvalidInput(f"the {what} must be positive, got {value}")
        if self.workdir_root is not None and not Path(self.workdir_root).is_absolute():
            raise InvalidInput(f"--workdir-root must be an absolute path, got {self.workdir_root}")
        if self.preload is None:
            object.__setattr__(self, "preload", default_preload(self.project_root))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WorkerSettings:
        """Defaults, overridden by ``OPSFLOW_WORKER_PRELOAD`` and ``OPSFLOW_WORKER_WARM`` (comma-separated modules;
        ``none``: nothing to warm), ``OPSFLOW_WORKER_SHUTDOWN_TIMEOUT``, ``OPSFLOW_WORKER_WORKDIR_ROOT`` and
        ``OPSFLOW_WORKER_STATE_DIR``."""
        env = os.environ if env is None else env
        values: dict = {}
        if env.get("OPSFLOW_WORKER_PRELOAD"):
            values["preload"] = tuple(m.strip() for m in env["OPSFLOW_WORKER_PRELOAD"].split(",") if m.strip())
        values["warm"] = warm_from((), env)
        if env.get("OPSFLOW_WORKER_SHUTDOWN_TIMEOUT"):
            try:
                values["shutdown_timeout"] = float(env["OPSFLOW_WORKER_SHUTDOWN_TIMEOUT"])
            except ValueError as exc:
                raise InvalidInput("OPSFLOW_WORKER_SHUTDOWN_TIMEOUT must be a number of seconds") from exc
        for var, key in (("OPSFLOW_WORKER_WORKDIR_ROOT", "workdir_root"), ("OPSFLOW_WORKER_STATE_DIR", "state_dir")):
            if env.get(var):
                values[key] = Path(env[var])
        return cls(**values)

    def with_limit(self, limit: int | None) -> WorkerSettings:
        return self if limit is None else replace(self, limit=limit)
