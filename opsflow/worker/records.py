"""What a worker keeps on disk about its run processes, so that no run is left RUNNING and no workspace is left behind.

Each run the worker forks gets a record ``<state dir>/<flow run id>.json``: its pid and the
process's start time (a pid alone may be reused), its working directory, and, once the process
has ended, the final state the worker still has to report. A record is removed only when the
process is gone, its working directory removed and the server has answered the report. So a
worker that was killed (or lost the Prefect API at the wrong moment) leaves records behind, and
the next worker with the same name (the same pool on the same host) finds them when it starts
and every ``RECONCILE_SECONDS`` after: it removes the workspaces (a build's ``.env`` files with
them) and reports the runs ``Crashed``, or the state that was not reported.

The state directory is per worker name and Prefect server: ``$TMPDIR/opsflow-worker-<name>/records-<hash>``
by default. Runs' working directories are ``<working_dir_root>/opsflow-worker-<name>/<flow run id>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from uuid import UUID

RECONCILE_SECONDS = 30.0
#: A run labelled with this worker's name but without a process for this long was claimed by a worker
#: that died before it could start the run.
CLAIM_GRACE_SECONDS = 120.0


def worker_dir_name(worker_name: str) -> str:
    """``opsflow-worker-<name>`` with anything but letters, digits, ``.``, ``_``, ``-`` replaced."""
    return "opsflow-worker-" + re.sub(r"[^A-Za-z0-9._-]", "_", worker_name)


def default_state_dir(worker_name: str, api_url: str = "") -> Path:
    """``$TMPDIR/opsflow-worker-<name>/records-<hash of the API URL>``: workers of one name serving different
    servers from one host (two local stacks) keep apart."""
    digest = hashlib.sha256(api_url.encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / worker_dir_name(worker_name) / f"records-{digest}"


def run_workdir(root: Path | None, worker_name: str, flow_run_id: UUID) -> Path:
    """The run's working directory (not created)."""
    return Path(root or tempfile.gettempdir()) / worker_dir_name(worker_name) / str(flow_run_id)


def make_workdir(root: Path | None, worker_name: str, flow_run_id: UUID) -> Path:
    """Create the run's working directory afresh (mode 0700): a leftover of an earlier attempt is removed first."""
    path = run_workdir(root, worker_name, flow_run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    return path


@dataclass
class RunRecord:
    """One run process of this worker, as written to disk."""

    flow_run_id: str
    pid: int
    ticks: int | None
    workdir: str
    label: str = ""
    #: The final state still to be reported: ``{"type": "CRASHED", "name": ..., "message": ...}``.
    pending_state: dict | None = None
    extra: dict = field(default_factory=dict)


class RunRecords:
    """The records of one worker (one directory)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, flow_run_id: UUID | str) -> Path:
        return self.directory / f"{flow_run_id}.json"

    def write(self, record: RunRecord) -> None:
        """Write atomically (a reader never sees half a record)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self._path(record.flow_run_id)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, target)

    def remove(self, flow_run_id: UUID | str) -> None:
        self._path(flow_run_id).unlink(missing_ok=True)

    def load(self) -> list[RunRecord]:
        """Every readable record; an unreadable one is removed (it can only be a torn write of a crash)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                found.append(RunRecord(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                path.unlink(missing_ok=True)
        return found


def unrecorded_orphan(flow_run, *, worker_name: str, host: str, known: set[UUID], pid_alive, now: float) -> str | None:
    """Why a run the server lists as Pending/Running/Cancelling is an orphan of this worker, or ``None``.

    Only runs labelled with this worker's name and started on this host (``infrastructure_pid``
    ``host:pid``) are considered, and never one this worker knows (running, being claimed, or
    recorded: records are handled from disk). ``pid_alive(pid)`` tells whether that pid runs;
    ``now`` is ``time.time()``.
    """
    if flow_run.id in known or (flow_run.labels or {}).get("prefect.worker.name") != worker_name:
        return None
    infra = flow_run.infrastructure_pid or ""
    if infra:
        run_host, _, pid = infra.rpartition(":")
        if run_host != host or not pid.isdigit() or pid_alive(int(pid)):
            return None
        return (f"The run's process (pid {pid} on {host}) is gone and its worker {worker_name} no longer knows "
                "it: the worker was stopped or killed while the run ran.")
    timestamp = flow_run.state.timestamp.timestamp() if flow_run.state and flow_run.state.timestamp else now
    if now - timestamp < CLAIM_GRACE_SECONDS:
        return None
    return (f"The run was claimed by worker {worker_name} on {host}, which stopped before it could start the "
            "run's process.")
