"""The zombie automation matches Prefect's documented shape and opsflow's heartbeat frequency."""

from __future__ import annotations

from opsflow.core.heartbeats import (
    HEARTBEAT_ENV,
    HEARTBEAT_SECONDS,
    ZOMBIE_AFTER_SECONDS,
    heartbeat_env,
    zombie_automation,
)
from opsflow.core.pools import with_env_defaults


def test_a_run_whose_heartbeats_stop_is_crashed_after_three_missed_beats():
    automation = zombie_automation()
    trigger = automation.trigger
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.posture.value == "Proactive" and trigger.for_each == {"prefect.resource.id"}
    assert trigger.within.total_seconds() == ZOMBIE_AFTER_SECONDS == 3 * HEARTBEAT_SECONDS
    # Another beat, an end, or a wait outside the process (pause, suspend, rescheduled retry) ends the wait.
    for name in ("heartbeat", "Completed", "Failed", "Crashed", "Cancelled", "Suspended", "AwaitingRetry"):
        assert f"prefect.flow-run.{name}" in trigger.expect
    (action,) = automation.actions
    assert action.type == "change-flow-run-state" and action.state.value == "CRASHED"
    assert str(ZOMBIE_AFTER_SECONDS) in action.message


def test_pools_carry_the_heartbeat_frequency():
    assert heartbeat_env() == {HEARTBEAT_ENV: "30"}
    template = {"variables": {"properties": {"env": {"type": "object", "default": {"KEEP": "1"}}}}}
    assert with_env_defaults(template, heartbeat_env())["variables"]["properties"]["env"]["default"] == {
        "KEEP": "1", HEARTBEAT_ENV: "30"}
