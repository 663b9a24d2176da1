"""Flow-run heartbeats, and the automation that marks a run ``Crashed`` once its heartbeats stop.

A run whose process dies with its machine, or with its worker, never reports an end: it would stay
RUNNING forever. Prefect's answer (docs: "Detect zombie flows") is two-fold, and opsflow sets up both:

- every flow run emits ``prefect.flow-run.heartbeat`` every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``
  seconds: opsflow's worker gives its runs :data:`HEARTBEAT_SECONDS` (unless the job variables set
  it), and the work pools opsflow creates carry it in their job templates' environment;
- a server-side automation, :func:`zombie_automation`: for each flow run, a heartbeat that is not
  followed within :data:`ZOMBIE_AFTER_SECONDS` by another heartbeat or by an end of the run moves the
  run to ``Crashed``. ``opsflow stack up`` and ``opsflow deploy`` create it (:func:`ensure_zombie_automation`).

The window is three heartbeats, so a run process that is busy (the heartbeat is a thread of its own,
but the machine may be loaded) is not crashed by mistake. A run waiting outside its process
(``Paused``/``Suspended``, or rescheduled for a retry) sends no heartbeats; those states end the wait.
A worker that is restarted on the same machine does better than the window: it finds its runs whose
process is gone at once (``opsflow.worker.records``).
"""

from __future__ import annotations

HEARTBEAT_SECONDS = 30  # Prefect's minimum
ZOMBIE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
AUTOMATION_NAME = "opsflow: crash flow runs whose heartbeats stopped"
#: Events that end the wait for the next heartbeat: another heartbeat, an end, or a wait outside the process.
EXPECTED_EVENTS = tuple(f"prefect.flow-run.{name}" for name in (
    "heartbeat", "Completed", "Failed", "Cancelled", "Crashed", "Paused", "Suspended", "AwaitingRetry", "Scheduled"))


def heartbeat_env() -> dict[str, str]:
    """The environment variable that makes a flow run send heartbeats as often as the automation expects."""
    return {HEARTBEAT_ENV: str(HEARTBEAT_SECONDS)}


def zombie_automation(within_s: float = ZOMBIE_AFTER_SECONDS, name: str = AUTOMATION_NAME,
                      runs: str = "prefect.flow-run.*"):
    """The automation (``prefect.automations.AutomationCore``) that crashes runs whose heartbeats stopped
    (``within_s``, ``name`` and ``runs``, the resource ids it watches, are for the tests)."""
    from datetime import timedelta

    from prefect.automations import AutomationCore
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=name,
        description=(f"A flow run that sent a heartbeat and then neither another one nor an end within "
                     f"{within_s:.0f} s lost its process (its machine or its worker died): marked Crashed."),
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"}, expect=set(EXPECTED_EVENTS),
            match=ResourceSpecification({"prefect.resource.id": [runs]}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=within_s)),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"No heartbeat for {within_s:.0f} s: the run's process is gone (its machine or its "
                    f"worker died). Marked Crashed by the automation '{name}'.")],
    )


def ensure_zombie_automation(client) -> str:
    """Create the automation on the server of ``client`` (a sync Prefect client) when it has none by that
    name, or put it back as defined here when it differs; returns what was done."""
    wanted = zombie_automation()
    existing = client.read_automations_by_name(AUTOMATION_NAME)
    if not existing:
        client.create_automation(wanted)
        return f"automation {AUTOMATION_NAME!r}: created"
    current = existing[0]

    def shape(automation) -> dict:
        return automation.model_dump(mode="json", include={"trigger", "actions", "description", "enabled"},
                                     exclude={"trigger": {"id"}})

    if shape(current) == shape(wanted):
        return f"automation {AUTOMATION_NAME!r}: exists"
    client.update_automation(current.id, wanted)
    return f"automation {AUTOMATION_NAME!r}: updated"
