"""How the worker hears that it may have something to claim: the server's event stream of its pool.

Every state change of a flow run is an event (``prefect.flow-run.<state name>``) whose related
resources name the run's work pool and queue, and pausing, resuming or limiting a pool or a queue
emits ``prefect.work-pool.*`` / ``prefect.work-queue.*``. The worker subscribes to those of its
pool over the server's ``/events/out`` websocket. An event never starts a run by itself: it only
wakes the worker's poll, which asks the server (``get_scheduled_flow_runs`` for the pool and the
worker's queues) what may start now. So a run heard of from an event gets exactly the answers the
server gives Prefect's own workers: nothing from a paused pool or queue, nothing beyond the pool's
or the queue's concurrency limit, higher-priority queues first; a deployment's concurrency limit is
then applied by the server when the worker proposes ``Pending``.

Events that cannot make a run startable (a run going ``Pending``/``Running``, heartbeats) are not
subscribed to. A run ending is: it frees a slot under the pool's or the queue's limit.
``Cancelling`` events go to the worker's cancel handler instead.

Measured on this project's stack (local Prefect 3.8.8 server, shared 2-CPU machine), from a run's
``created`` timestamp to the moment the worker knows of it:

===========================  ============================  =======================
source                       typical                       worst seen
===========================  ============================  =======================
event stream                 20-70 ms                      ~200 ms (server busy)
poll every 1 s (before)      ~500 ms on average (0-1 s)    1 s + request time
===========================  ============================  =======================

So the stream is the primary source and the poll (every ``poll_interval``, 5 s, while the stream is
connected, every ``fallback_poll_interval`` while it is not) catches what the stream missed: a
reconnect gap. A run scheduled for later is seen by the poll before it falls due (each poll looks
one interval ahead) and woken for at its time (``OpsflowWorker._wake_at``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from uuid import UUID

log = logging.getLogger("opsflow.worker.watch")

CANCELLING_EVENT = "prefect.flow-run.Cancelling"
EVENT_PREFIXES = ("prefect.flow-run.", "prefect.work-pool.", "prefect.work-queue.")
#: Flow-run events that never make another run startable: the run is being claimed or runs.
QUIET_EVENTS = tuple(f"prefect.flow-run.{name}" for name in (
    "heartbeat", "Pending", "Submitting", "InfrastructurePending", "Running", "Retrying", "pull-step.executed"))
SCHEDULED_TYPE_EVENTS = tuple(f"prefect.flow-run.{name}" for name in (
    "Scheduled", "AwaitingRetry", "Late", "AwaitingConcurrencySlot"))


def event_filter(pool_id: UUID):
    """The subscription: events of the pool, its queues and its runs, without the quiet ones."""
    from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter

    return EventFilter(event=EventNameFilter(prefix=list(EVENT_PREFIXES), exclude_name=list(QUIET_EVENTS)),
                       any_resource=EventAnyResourceFilter(id=[f"prefect.work-pool.{pool_id}"]))


def scheduled_deployment(event) -> UUID | None:
    """The deployment a run was just scheduled (or rescheduled) for, from the event's related resources."""
    if event.event not in SCHEDULED_TYPE_EVENTS:
        return None
    for related in event.related:
        if related.role == "deployment" and related.id.startswith("prefect.deployment."):
            try:
                return UUID(related.id.removeprefix("prefect.deployment."))
            except ValueError:
                return None
    return None


def classify(event, queues: tuple[str, ...]) -> tuple[str, UUID | None]:
    """What an event means to a worker of ``queues`` (empty: all): ``("cancel", run id)``, ``("wake", None)``
    or ``("ignore", None)``."""
    resource_id = event.resource.id
    if resource_id.startswith("prefect.flow-run."):
        try:
            run_id = UUID(resource_id.removeprefix("prefect.flow-run."))
        except ValueError:
            return "ignore", None
        if event.event == CANCELLING_EVENT:
            return "cancel", run_id
        if queues and event.event in SCHEDULED_TYPE_EVENTS:
            queue = next((r.name for r in event.related if r.role == "work-queue"), None)
            if queue is not None and queue not in queues:
                return "ignore", None
    if event.event in QUIET_EVENTS:
        return "ignore", None
    return "wake", None


class PoolEvents:
    """Subscribes to a pool's events (reconnecting with back-off); calls ``wake()`` or ``on_cancelling(run id)``."""

    def __init__(self, pool_id: UUID, queues: tuple[str, ...], wake: Callable[[], None],
                 on_cancelling: Callable[[UUID], None], pool_name: str = "",
                 on_scheduled: Callable[[UUID], None] | None = None):
        self.pool_id = pool_id
        self.queues = queues
        self.wake = wake
        self.on_cancelling = on_cancelling
        self.on_scheduled = on_scheduled  # called with the deployment of a run just scheduled, before the wake
        self.pool_name = pool_name or str(pool_id)
        self.connected = False

    async def run(self) -> None:
        """Until cancelled."""
        from prefect.events.clients import get_events_subscriber

        backoff = 1.0
        while True:
            try:
                async with get_events_subscriber(filter=event_filter(self.pool_id), reconnection_attempts=2,
                                                 reconnect_on_clean_close=True) as subscriber:
                    self.connected = True
                    backoff = 1.0
                    log.info("subscribed to the events of work pool %s", self.pool_name)
                    self.wake()  # anything that happened while not subscribed
                    async for event in subscriber:
                        action, run_id = classify(event, self.queues)
                        if action == "cancel":
                            self.on_cancelling(run_id)
                        elif action == "wake":
                            deployment = scheduled_deployment(event)
                            if deployment is not None and self.on_scheduled is not None:
                                self.on_scheduled(deployment)
                            self.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any stream failure: the poll takes over; reconnect
                log.warning("event stream of work pool %s lost (%s: %s); polling more often until it is back",
                            self.pool_name, type(exc).__name__, exc)
            finally:
                self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
