"""Claiming a flow run and reporting what became of it, the way Prefect's workers do.

A worker owns a run once the server has accepted its ``Pending`` proposal for it: the server
orchestrates every state change in one transaction and rejects (or aborts) ``Pending`` for a
run that is no longer ``Scheduled``, so of two workers proposing it only one gets it.
"""

from __future__ import annotations

import datetime as dt
import signal
from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True)
class Verdict:
    """Whether a sighted run is this worker's to claim now; ``due_in`` > 0 means "not yet"."""

    ok: bool
    reason: str = ""
    due_in: float = 0.0


def check_run(flow_run, queues: tuple[str, ...], now: dt.datetime | None = None) -> Verdict:
    """Decide, without side effects, whether ``flow_run`` should be claimed now."""
    if flow_run.deployment_id is None:
        return Verdict(False, "not a deployment run")
    state = flow_run.state
    if state is None or not state.is_scheduled():
        return Verdict(False, f"state is {state.name if state else 'unknown'}")
    if queues and flow_run.work_queue_name not in queues:
        return Verdict(False, f"queue {flow_run.work_queue_name!r} is not one of ours")
    scheduled = state.state_details.scheduled_time or flow_run.expected_start_time
    now = now or dt.datetime.now(dt.UTC)
    if scheduled is not None and scheduled > now:
        return Verdict(False, "scheduled later", due_in=(scheduled - now).total_seconds())
    return Verdict(True)


async def claim(client, flow_run_id: UUID):
    """Propose ``Pending``; returns (claimed, why not, the state the server answered)."""
    from prefect.exceptions import Abort, ObjectNotFound
    from prefect.states import Pending
    from prefect.utilities.engine import propose_state

    try:
        state = await propose_state(client, Pending(), flow_run_id=flow_run_id)
    except Abort as exc:
        return False, f"server aborted the claim: {exc}", None
    except ObjectNotFound:
        return False, "flow run was deleted", None
    if not state.is_pending():
        return False, f"server answered {state.name}", state
    return True, "", state


async def _propose_final(client, flow_run_id: UUID, proposed) -> bool:
    """Propose a final state; False when the run had already reached another one (or is gone)."""
    from prefect.exceptions import Abort, ObjectNotFound
    from prefect.utilities.engine import propose_state

    try:
        state = await propose_state(client, proposed, flow_run_id=flow_run_id)
    except (Abort, ObjectNotFound):
        return False
    return state.type == proposed.type


async def report_crashed(client, flow_run_id: UUID, message: str) -> bool:
    """Propose ``Crashed(message)``; False when the run had already reached another final state."""
    from prefect.states import Crashed

    return await _propose_final(client, flow_run_id, Crashed(message=message))


async def report_cancelled(client, flow_run_id: UUID, message: str) -> bool:
    """Move a ``Cancelling`` run whose process was stopped to ``Cancelled``."""
    from prefect.states import Cancelled

    return await _propose_final(client, flow_run_id, Cancelled(message=message))


def exit_message(code: int) -> str:
    """The ``Crashed`` message for a run process that exited with ``code`` (negative: killed by that signal)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"Flow run process was killed by {name}."
    return f"Flow run process exited with code {code}."
