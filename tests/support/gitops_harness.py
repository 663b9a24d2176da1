"""What the GitOps flow tests share: running a flow and reading back what it left on the server."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID


@dataclass
class Run:
    """A flow run called in-process: its final state, result (or exception) and id."""

    state: object
    seconds: float

    @property
    def id(self) -> UUID:
        return self.state.state_details.flow_run_id

    @property
    def ok(self) -> bool:
        return self.state.is_completed()

    def result(self):
        return self.state.result(raise_on_failure=False)


def run_flow(flow, **params) -> Run:
    started = time.monotonic()
    state = flow(**params, return_state=True)
    return Run(state=state, seconds=time.monotonic() - started)


def _task_runs(run_id: UUID) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])), limit=200)


def task_run_names(run_id: UUID) -> list[str]:
    """The names of the run's task runs (whatever their state)."""
    return sorted(r.name for r in _task_runs(run_id))


def task_run_states(run_id: UUID) -> dict[str, str]:
    """Task run name → its state's name (Completed, Failed, NotReady, ...)."""
    return {r.name: r.state.name if r.state else "?" for r in _task_runs(run_id)}


def run_logs(run_id: UUID, settle_s: float = 15) -> str:
    """Every log line of a finished flow run. Logs reach the server in batches a moment after the
    run ends: wait (up to ``settle_s``) until the flow run's own last line, "Finished in state", is there."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + settle_s
    with get_client(sync_client=True) as client:
        while True:
            logs, offset = [], 0
            while True:
                page = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                                        limit=200, offset=offset)
                logs += page
                if len(page) < 200:
                    break
                offset += 200
            if any(log.task_run_id is None and log.message.startswith("Finished in state") for log in logs) \
                    or time.monotonic() > deadline:
                return "\n".join(log.message for log in logs)
            time.sleep(0.3)


def run_artifacts(run_id: UUID) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))


@dataclass
class ProcessWatch:
    """Samples every process's argv while it runs (what ``ps`` would show anyone on the machine)."""

    interval: float = 0.05
    seen: set[str] = field(default_factory=set)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    try:
                        self.seen.add((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                    except OSError:
                        pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def wait_http(url: str, deadline_s: float = 30) -> object:
    import httpx

    end = time.monotonic() + deadline_s
    last: object = None
    while time.monotonic() < end:
        try:
            return httpx.get(url, timeout=2)
        except httpx.HTTPError as exc:
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {deadline_s}s: {last}")


def manifest_digest(registry, repository: str, reference: str) -> str | None:
    """The digest the registry (a ContainerRegistry block: its login and CA) serves ``repository:reference``
    (or ``@digest``) under, or None."""
    path = repository.split("/", 1)[1]
    with registry.get_client() as client:
        resp = client.head(f"/v2/{path}/manifests/{reference}", timeout=10)
    return resp.headers.get("Docker-Content-Digest") if resp.status_code == 200 else None


def events_since(since, settle_s: float = 20, wait_for: str | None = None) -> list[dict]:
    """Every event the Prefect server stored since ``since`` (a datetime), as JSON; with ``wait_for``, waits
    (up to ``settle_s``) until an event of that name is among them (events are persisted in batches)."""
    from opsflow.core.prefect_api import api_client  # the server's auth, as Prefect's client sends it

    deadline = time.monotonic() + settle_s
    with api_client(timeout=30) as client:
        while True:
            events: list[dict] = []
            page = client.post("events/filter", json={"filter": {"occurred": {"since": since.isoformat()}},
                                                      "limit": 50})
            page.raise_for_status()
            page = page.json()
            events += page["events"]
            while page.get("next_page"):
                page = client.get(page["next_page"])
                page.raise_for_status()
                page = page.json()
                events += page["events"]
            if wait_for is None or any(e["event"] == wait_for for e in events) or time.monotonic() > deadline:
                return events
            time.sleep(0.5)


def run_state_messages(run_id: UUID) -> list[str]:
    """Every state message of the flow run and of its task runs (the whole history)."""
    from prefect.client.orchestration import get_client

    messages = []
    with get_client(sync_client=True) as client:
        messages += [s.message or "" for s in client.read_flow_run_states(run_id)]
        for task_run in _task_runs(run_id):
            messages.append(task_run.state.message or "" if task_run.state else "")
    return messages


def files_under(root: Path, pattern: str = "*") -> list[Path]:
    """Regular files under the directories of ``root`` matching ``pattern`` (symlinks not followed)."""
    found = []
    for base in root.glob(pattern):
        if base.is_file() and not base.is_symlink():
            found.append(base)
        elif base.is_dir() and not base.is_symlink():
            found += [p for p in base.rglob("*") if p.is_file() and not p.is_symlink()]
    return found


def leaks(texts: dict[str, str | bytes], secrets: list[str]) -> list[str]:
    """``"<where>: <secret>"`` for every planted secret found in any text (bytes are searched as bytes)."""
    hits = []
    for where, text in texts.items():
        for secret in secrets:
            needle = secret.encode() if isinstance(text, bytes) else secret
            if needle in text:
                hits.append(f"{where}: {secret[:6]}…")
    return hits
