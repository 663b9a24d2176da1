"""How a run's end is told to the server: the final states the worker proposes, retried until the API answers.

The worker proposes a final state only when the run's own process could not: it died (``Crashed``
with the exit code or the signal), it was killed on a cancel request (``Cancelled``) or on its run
timeout (``Failed``, named ``TimedOut``), or it was found orphaned (``Crashed``). The server
refuses the proposal when the run already reached a final state (its engine reported it before
dying), which is the answer "nothing to do". A proposal that meets a down or slow API is sent
again (:func:`opsflow.core.waits.retry_async`) until the server answers, or, while the worker is
stopping, left in the run's record for the next start (:mod:`opsflow.worker.records`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any
from uuid import UUID

from opsflow.core.waits import describe, retry_async

log = logging.getLogger("opsflow.worker")


def exit_message(code: int) -> str:
    """The ``Crashed`` message for a run process that exited with ``code`` (negative: killed by that signal)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"Flow run process was killed by {name}."
    return f"Flow run process exited with code {code}."


def state_spec(kind: str, message: str) -> dict[str, str]:
    """A final state as it is kept in a run record: ``kind`` is crashed, cancelled or timed-out."""
    names = {"crashed": ("CRASHED", "Crashed"), "cancelled": ("CANCELLED", "Cancelled"),
             "timed-out": ("FAILED", "TimedOut")}
    state_type, name = names[kind]
    return {"type": state_type, "name": name, "message": message}


def build_state(spec: dict[str, str]) -> Any:
    """The Prefect state of a :func:`state_spec`."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import State

    return State(type=StateType(spec["type"]), name=spec["name"], message=spec["message"])


async def propose_final(client, flow_run_id: UUID, spec: dict[str, str], *, stop: asyncio.Event | None = None,
                        deadline_s: float | None = None) -> bool:
    """Propose the final state ``spec``; True when the server took it, False when the run had already
    ended (or is gone). Retried while the API fails transiently.

    Raises:
        RemoteUnavailable: ``stop`` was set (or ``deadline_s`` passed) while the API still failed.
    """
    from prefect.exceptions import Abort, ObjectNotFound
    from prefect.utilities.engine import propose_state

    state = build_state(spec)

    async def once() -> bool:
        try:
            answered = await propose_state(client, state, flow_run_id=flow_run_id)
        except (Abort, ObjectNotFound):
            return False
        return answered.type == state.type

    told = []

    def on_retry(exc: BaseException, pause: float) -> None:
        if not told:
            log.warning("could not report flow run %s %s (%s); retrying until the Prefect API answers",
                        flow_run_id, spec["name"], describe(exc))
            told.append(True)

    return await retry_async(once, what=f"reporting flow run {flow_run_id} {spec['name']}", stop=stop,
                             deadline_s=deadline_s, on_retry=on_retry)
