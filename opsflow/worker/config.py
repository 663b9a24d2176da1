"""What one worker is told: its pool, queues, name, limits, the modules its zygote preloads."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from opsflow.core.errors import InvalidInput
from opsflow.core.paths import PROJECT_ROOT

#: The checkout this package lives in: the directory holding ``flows/``, ``tasks/``, ``blocks/``.


def default_worker_name(pool: str) -> str:
    """``<pool>-<hostname>``, the name the stack's health check looks for."""
    return f"{pool}-{socket.gethostname()}"


def default_preload(project_root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """Every module under ``flows/`` of the checkout, as dotted names (``flows.smoke``, ...)."""
    flows_dir = project_root / "flows"
    if not flows_dir.is_dir():
        return ()
    return tuple(f"flows.{p.stem}" for p in sorted(flows_dir.glob("*.py")) if not p.stem.startswith("_"))


@dataclass(frozen=True)
class WorkerConfig:
    """Settings of one worker process; built by the CLI, read by the service."""

    pool: str
    name: str = ""
    queues: tuple[str, ...] = ()
    limit: int = 4
    preload: tuple[str, ...] | None = None
    project_root: Path = PROJECT_ROOT
    #: Poll period while the event stream is connected (a safety net for missed events) ...
    poll_interval: float = 1.0
    #: ... and while it is not (then the poll is the only source).
    fallback_poll_interval: float = 0.25
    heartbeat_interval: float = 10.0
    #: How long SIGTERM/SIGINT waits for running flow runs before killing them.
    shutdown_timeout: float = 60.0
    #: Where each run's fresh working directory is created (default: the system temp dir).
    workdir_root: Path | None = None

    def __post_init__(self) -> None:
        if not self.pool or not self.pool.strip():
            raise InvalidInput("--pool must name a work pool")
        if self.limit < 1:
            raise InvalidInput(f"--limit must be at least 1, got {self.limit}")
        if any(not q.strip() for q in self.queues):
            raise InvalidInput("--queue must not be empty")
        for value, what in ((self.poll_interval, "poll interval"), (self.fallback_poll_interval, "fallback poll"),
                            (self.heartbeat_interval, "heartbeat interval")):
            if value <= 0:
                raise InvalidInput(f"the {what} must be positive, got {value}")
        if not self.name:
            object.__setattr__(self, "name", default_worker_name(self.pool))
        if self.preload is None:
            object.__setattr__(self, "preload", default_preload(self.project_root))
