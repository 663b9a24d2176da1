"""``opsflow runs watch``: follow one flow run's states and logs in the terminal, as ``gh run watch`` does.

It polls the Prefect API (``--interval``, 1 s by default) for the run's state and its new log
lines, since a terminal user wants one ordered stream and the API's log filter answers "everything
after this timestamp" cheaply; the event stream would add a websocket and still need the logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from opsflow.core.errors import InvalidInput, OpsflowError

#: Final state types: the watch ends on these.
FINAL = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
_LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


def state_line(at: datetime, name: str, message: str | None = None) -> str:
    """``12:00:01  ● Running`` (with the state's message when it has one)."""
    text = f"{at.astimezone().strftime('%H:%M:%S')}  ● {name}"
    if message:
        text += f": {message.strip().splitlines()[0]}"
    return text


def log_line(at: datetime, level: int, message: str) -> str:
    """``12:00:02  INFO  the message`` (continuation lines indented)."""
    head = f"{at.astimezone().strftime('%H:%M:%S')}  {_LEVELS.get(level, str(level)):<7} "
    return head + message.replace("\n", "\n" + " " * len(head))


def exit_code(state_type: str) -> int:
    """0 for a completed run, 1 for any other final state."""
    return 0 if state_type == "COMPLETED" else 1


def _find_run(client, ref: str):
    """A flow run by id, or the latest run of ``<flow>/<deployment>`` (due now or earlier: not a future schedule)."""
    from datetime import UTC, datetime, timedelta

    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_flow_run(UUID(ref))
    except ValueError:
        pass
    except ObjectNotFound:
        raise InvalidInput(f"no flow run {ref} on the server: copy the id from the run's page in the UI") from None
    if "/" not in ref:
        raise InvalidInput(f"{ref!r} is neither a flow run id nor <flow>/<deployment> (e.g. manual-deploy/edge-local)")
    try:
        deployment = client.read_deployment_by_name(ref)
    except ObjectNotFound:
        raise InvalidInput(f"no deployment {ref}: `opsflow apply` creates them; the UI lists the names") from None
    due = datetime.now(UTC) + timedelta(seconds=5)
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
        flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(before_=due)),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1)
    if not runs:
        raise InvalidInput(f"deployment {ref} has no runs yet: start one from the UI (Run → Quick run)")
    return runs[0]


def watch(ref: str, interval: float = 1.0, timeout: float = 0, out: Callable[[str], None] | None = None) -> int:
    """Print the run's state changes and log lines until it ends; returns 0 if it completed, else 1."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterTimestamp
    from prefect.client.schemas.sorting import LogSort
    from prefect.utilities.urls import url_for

    say = out or (lambda line: print(line, flush=True))
    if interval <= 0:
        raise InvalidInput(f"--interval must be positive, got {interval}")
    deadline = time.monotonic() + timeout if timeout > 0 else None
    with get_client(sync_client=True) as client:
        run = _find_run(client, ref)
        say(f"{run.name} ({run.id})  {url_for(run) or ''}".rstrip())
        last_state, since, seen = None, None, set()
        while True:
            run = client.read_flow_run(run.id)
            state = run.state
            if state is not None and (state.id, state.name) != last_state:
                last_state = (state.id, state.name)
                say(state_line(state.timestamp, state.name, state.message))
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]),
                                     timestamp=LogFilterTimestamp(after_=since) if since else None),
                sort=LogSort.TIMESTAMP_ASC, limit=200)
            for entry in logs:
                if entry.id in seen:
                    continue
                seen.add(entry.id)
                since = entry.timestamp
                say(log_line(entry.timestamp, entry.level, entry.message))
            if state is not None and state.type.value in FINAL and len(logs) < 200:
                return exit_code(state.type.value)
            if deadline is not None and time.monotonic() > deadline:
                now = state.name if state else "pending"
                raise OpsflowError(f"run {run.name} is still {now} after {timeout:.0f} s (--timeout); it goes on: "
                                   "watch it again or open it in the UI")
            if len(logs) < 200:
                time.sleep(interval)
