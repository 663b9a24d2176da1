"""The session stack's workers: the worker type ``opsflow`` on pools of that type, started with only the variables
they need, and left alone by ``stack up`` while the Prefect API does not answer."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opsflow.stack import Stack
from opsflow.stack.config import WORK_POOLS, load_credentials
from opsflow.stack.services import WORKER_PASS_THROUGH, client_env, worker_name, worker_online

pytestmark = [pytest.mark.stack]


def _records(stack) -> dict:
    return json.loads(stack.state_file.read_text())["services"]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def test_the_pools_are_of_type_opsflow_with_its_form_and_the_zombie_automation_exists(stack):
    from prefect.client.orchestration import get_client

    from opsflow.core.heartbeats import AUTOMATION_NAME, ZOMBIE_AFTER_SECONDS

    with get_client(sync_client=True) as client:
        for pool in WORK_POOLS:
            found = client.read_work_pool(pool)
            assert found.type == "opsflow"
            assert set(found.base_job_template["variables"]["properties"]) >= {"env", "working_dir_root",
                                                                              "stream_output", "run_timeout"}
            workers = client.read_workers_for_work_pool(pool)
            assert any(w.status.value == "ONLINE" for w in workers), workers
        (automation,) = client.read_automations_by_name(AUTOMATION_NAME)
        assert automation.enabled and automation.trigger.within.total_seconds() == ZOMBIE_AFTER_SECONDS


def test_the_workers_get_only_the_variables_they_need(stack, stack_database):
    secrets = [load_credentials(stack.home)["s3_secret_key"]]
    if stack_database is not None:
        secrets.append(stack_database.password())
    allowed = WORKER_PASS_THROUGH | set(client_env(stack)) | {
        "DOCKER_HOST", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "OPSFLOW_STACK_HOME"}
    assert os.environ.get("OPSFLOW_TEST_PORT_BASE") or os.environ.get("PREFECT_API_URL")  # the caller has more
    for name in ("worker-vault-build", "worker-edge"):
        worker = _records(stack)[name]["pid"]
        env = _environ(worker)
        extra = {k for k in env if k not in allowed and not k.startswith("LC_")}
        assert not extra, f"{name} got {sorted(extra)} from the caller"
        (zygote,) = _children(worker)  # runs fork from it and inherit its environment
        zygote_env = _environ(zygote)
        # The worker adds its own Prefect settings (so a run need not read them again), nothing else.
        assert all(k.startswith("PREFECT_") for k in set(zygote_env) - set(env)), sorted(set(zygote_env) - set(env))
        for pid, seen in ((worker, env), (zygote, zygote_env)):
            text = "\0".join(f"{k}={v}" for k, v in seen.items())
            assert not [s for s in secrets if s in text], f"a secret reached {name} (pid {pid})"


def test_stack_up_while_the_prefect_api_does_not_answer_leaves_the_worker_running(stack):
    from prefect.client.orchestration import get_client

    records = _records(stack)
    prefect, worker = records["prefect"]["pid"], records["worker-edge"]["pid"]
    lines: list[str] = []
    os.killpg(prefect, signal.SIGSTOP)  # the server is frozen: its port accepts, nothing answers
    try:
        started = Stack(stack.with_services(("worker-edge",)), say=lines.append).up()
    finally:
        os.killpg(prefect, signal.SIGCONT)
    back = datetime.now(UTC)
    assert started == []
    assert _records(stack)["worker-edge"]["pid"] == worker and Path(f"/proc/{worker}").exists()
    said = "\n".join(lines)
    assert f"the Prefect API at {stack.prefect_api_url} does not answer" in said and "not restarting it" in said

    def heartbeat_since_back() -> bool:  # the same worker reconnects by itself once the API answers again
        with get_client(sync_client=True) as client:
            listed = [w for w in client.read_workers_for_work_pool("edge") if w.name == worker_name("edge")]
        return bool(listed) and listed[0].last_heartbeat_time > back

    deadline = time.monotonic() + 60
    while not heartbeat_since_back() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert heartbeat_since_back() and worker_online(stack, "edge")
    assert _records(stack)["worker-edge"]["pid"] == worker


def test_a_running_run_whose_heartbeats_stop_is_crashed_by_the_zombie_automation(stack):
    """The stack's automation with a 10 s window (Prefect's least) instead of 90 s, watching one run: one heartbeat,
    then silence."""
    import asyncio
    import uuid

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.events import Event
    from prefect.events.clients import get_events_client
    from prefect.states import Running

    from opsflow.core.heartbeats import zombie_automation

    @flow(name="heartbeat-probe")
    def silent():
        return None

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(silent, state=Running())
        automation = client.create_automation(zombie_automation(
            within_s=10, name=f"zombie-test-{uuid.uuid4().hex[:6]}", runs=f"prefect.flow-run.{run.id}"))
        try:
            async def beat() -> None:
                # A few heartbeats, 1 s apart, then silence: the server's triggers service loads a new automation
                # asynchronously, and a loaded server was seen to miss a single heartbeat sent right after creating it.
                async with get_events_client() as events:
                    for i in range(3):
                        await events.emit(Event(event="prefect.flow-run.heartbeat",
                                                resource={"prefect.resource.id": f"prefect.flow-run.{run.id}"}))
                        if i < 2:
                            await asyncio.sleep(1)

            asyncio.run(beat())
            deadline = time.monotonic() + 60  # the window, then the server's next proactive evaluation (every 5 s)
            while not client.read_flow_run(run.id).state.is_crashed() and time.monotonic() < deadline:
                time.sleep(0.5)
            state = client.read_flow_run(run.id).state
            assert state.is_crashed() and "No heartbeat for 10 s" in state.message, state
        finally:
            client.delete_automation(automation)
            client.delete_flow_run(run.id)
