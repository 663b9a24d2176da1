"""The worker type ``opsflow`` (``opsflow worker start``) against the session's real Prefect server, as subprocesses.

The probe flow (``flowcode.py``) is deployed from a temporary directory, so it is never in the
worker's preload list: every run also proves the worker runs flows it did not preload.
"""

from __future__ import annotations

import datetime
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.workers import tagged_pids

pytestmark = [pytest.mark.stack]


def wait_final(client, run_id, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(0.1)
    raise AssertionError(f"flow run {run_id} not final after {timeout} s: {run.state}")


def wait_for(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def records(out_dir: Path, run_id) -> list[dict]:
    path = out_dir / f"{run_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def still_scheduled(client, run_id, polls: float = 1.5) -> bool:
    """Whether the run is still Scheduled well after the event that woke the worker's poll for it."""
    time.sleep(polls)
    return client.read_flow_run(run_id).state.is_scheduled()


def test_runs_start_as_runs_of_a_prefect_worker_of_type_opsflow(prefect_client, pool, deploy, worker, tmp_path):
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    deployment_id = deploy("latency")
    runs = [prefect_client.create_flow_run_from_deployment(deployment_id, parameters={"out_dir": str(tmp_path)})
            for _ in range(3)]
    for run in runs:
        done = wait_final(prefect_client, run.id)
        assert done.state.is_completed(), done.state
        assert done.labels["prefect.worker.type"] == "opsflow" and done.labels["prefect.worker.name"] == "warm-a"
        assert done.infrastructure_pid.endswith(f":{records(tmp_path, run.id)[0]['pid']}")
    (listed,) = [w for w in prefect_client.read_workers_for_work_pool(pool) if w.name == "warm-a"]
    assert listed.status.value == "ONLINE"
    assert prefect_client.read_work_pool(pool).type == "opsflow"

    def worker_events():  # what BaseWorker emits, as the UI shows it under the run
        page = prefect_client.read_events(limit=50, filter=EventFilter(
            event=EventNameFilter(prefix=["prefect.worker."]),
            related=EventRelatedFilter(id=[f"prefect.flow-run.{runs[0].id}"])))
        return {e.event for e in page.events} >= {"prefect.worker.submitted-flow-run",
                                                  "prefect.worker.executed-flow-run"}

    wait_for(worker_events, "the worker's submitted/executed events of the run", timeout=30)
    assert "started flow run" in worker.log_text()


def test_each_run_has_its_own_process_directory_and_env(prefect_client, deploy, code_dir, worker, tmp_path):
    root = tmp_path / "runs"
    deployment_id = deploy("isolation", env={"OPSFLOW_PROBE_FROM": "deployment", "OPSFLOW_PROBE_KEEP": "kept"},
                           job_variables={"working_dir_root": str(root)})
    first = prefect_client.create_flow_run_from_deployment(
        deployment_id, parameters={"out_dir": str(tmp_path)},
        job_variables={"env": {"OPSFLOW_PROBE_FROM": "flow-run", "OPSFLOW_PROBE_ONLY_FIRST": "1",
                               "OPSFLOW_PROBE_KEEP": None}})
    second = prefect_client.create_flow_run_from_deployment(deployment_id, parameters={"out_dir": str(tmp_path)})
    for run in (first, second):
        assert wait_final(prefect_client, run.id).state.is_completed()
    (one,), (two,) = records(tmp_path, first.id), records(tmp_path, second.id)

    # Pool default < deployment < run, key by key; a null unsets.
    assert one["env"] == {"OPSFLOW_PROBE_FROM": "flow-run", "OPSFLOW_PROBE_ONLY_FIRST": "1"}
    assert two["env"] == {"OPSFLOW_PROBE_FROM": "deployment", "OPSFLOW_PROBE_KEEP": "kept"}

    assert Path(one["code"]) == code_dir.resolve()  # imported in place from the deployment's directory
    assert one["pid"] != two["pid"] and worker.proc.pid not in (one["pid"], one["ppid"], two["pid"], two["ppid"])
    assert Path(one["cwd"]) == root / "opsflow-worker-warm-a" / str(first.id)  # job variable working_dir_root
    assert Path(two["cwd"]) == root / "opsflow-worker-warm-a" / str(second.id)
    wait_for(lambda: not Path(one["cwd"]).exists() and not Path(two["cwd"]).exists(),
             "the worker removes a run's directory once its process has exited", timeout=10)


def test_crash_cancel_timeout_failure_and_a_bad_parameter_each_end_the_run_as_they_should(
        prefect_client, deploy, worker, tmp_path):
    from prefect.states import Cancelling

    deployment_id = deploy("ends")
    timed = deploy("timed", job_variables={"run_timeout": 2})
    cases = {how: prefect_client.create_flow_run_from_deployment(deployment_id, parameters={"how": how})
             for how in ("exit", "kill", "segv", "raise")}
    cases["timeout"] = prefect_client.create_flow_run_from_deployment(timed, parameters={"sleep": 60})
    cases["unknown"] = prefect_client.create_flow_run_from_deployment(deployment_id, parameters={"colour": "red"})
    cancel = prefect_client.create_flow_run_from_deployment(
        deployment_id, parameters={"sleep": 60, "out_dir": str(tmp_path)})
    wait_for(lambda: records(tmp_path, cancel.id), "the run to be cancelled is running")
    prefect_client.set_flow_run_state(cancel.id, Cancelling())

    expected = {"exit": ("CRASHED", "exited with code 3"), "kill": ("CRASHED", "killed by SIGKILL"),
                "segv": ("CRASHED", "killed by SIGSEGV"), "raise": ("FAILED", "failed on purpose"),
                "timeout": ("FAILED", "run timeout"), "unknown": ("FAILED", "has no parameter 'colour'")}
    for how, run in cases.items():
        state = wait_final(prefect_client, run.id).state
        assert (state.type.value, expected[how][1] in state.message) == (expected[how][0], True), (how, state)
    assert wait_final(prefect_client, cancel.id).state.is_cancelled()
    assert not Path(f"/proc/{records(tmp_path, cancel.id)[0]['pid']}").exists()
    assert prefect_client.read_flow_run(cases["timeout"].id).state.name == "TimedOut"

    assert worker.proc.poll() is None
    after = prefect_client.create_flow_run_from_deployment(deployment_id, parameters={"out_dir": str(tmp_path)})
    assert wait_final(prefect_client, after.id).state.is_completed()


def test_an_unknown_job_variable_is_refused_when_the_deployment_is_applied(deploy):
    from prefect.deployments.runner import DeploymentApplyError

    with pytest.raises(DeploymentApplyError, match="'run_timout' was unexpected"):
        deploy("misspelt", job_variables={"run_timout": 60})


def test_pull_steps_go_through_prefects_step_runner(prefect_client, pool, code_dir, worker, tmp_path):
    """A ``git_clone`` pull step clones into the run's own directory, and the flow is imported from the clone."""
    repo = tmp_path / "repo"
    shutil.copytree(code_dir, repo)
    for argv in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "probe"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *argv], cwd=repo, check=True)
    flow_id = prefect_client.create_flow_from_name("probe")
    deployment_id = prefect_client.create_deployment(
        flow_id=flow_id, name="git-clone", entrypoint="flowcode.py:probe", work_pool_name=pool,
        pull_steps=[{"prefect.deployments.steps.git_clone": {"repository": str(repo), "branch": "main"}}])
    run = prefect_client.create_flow_run_from_deployment(deployment_id, parameters={"out_dir": str(tmp_path)})
    assert wait_final(prefect_client, run.id).state.is_completed()
    (seen,) = records(tmp_path, run.id)
    assert Path(seen["code"]).parent == Path(seen["cwd"]) and Path(seen["code"]) != repo


def test_a_paused_pool_or_queue_starts_nothing_until_resumed(prefect_client, pool, deploy, worker, tmp_path):
    from prefect.client.schemas.actions import WorkPoolUpdate

    deployment_id = deploy("paused")
    default_queue = prefect_client.read_work_queue_by_name("default", work_pool_name=pool)
    for pause, resume in (
            (lambda: prefect_client.update_work_pool(pool, WorkPoolUpdate(is_paused=True)),
             lambda: prefect_client.update_work_pool(pool, WorkPoolUpdate(is_paused=False))),
            (lambda: prefect_client.update_work_queue(default_queue.id, is_paused=True),
             lambda: prefect_client.update_work_queue(default_queue.id, is_paused=False))):
        pause()
        try:
            run = prefect_client.create_flow_run_from_deployment(deployment_id, parameters={"out_dir": str(tmp_path)})
            assert still_scheduled(prefect_client, run.id) and not records(tmp_path, run.id)
        finally:
            resume()
        assert wait_final(prefect_client, run.id, timeout=30).state.is_completed()


def test_pool_limit_queue_priority_and_deployment_limit_are_the_servers(prefect_client, pool, deploy, worker,
                                                                         tmp_path):
    from prefect.client.schemas.actions import WorkPoolUpdate

    # Pool limit 1 and two queues: the run of the higher-priority queue (default) first, though created last.
    prefect_client.update_work_pool(pool, WorkPoolUpdate(is_paused=True))
    try:
        low = prefect_client.create_flow_run_from_deployment(deploy("low", queue="q1"),
                                                             parameters={"out_dir": str(tmp_path), "sleep": 1})
        high = prefect_client.create_flow_run_from_deployment(deploy("high", queue="default"),
                                                              parameters={"out_dir": str(tmp_path), "sleep": 1})
        prefect_client.update_work_pool(pool, WorkPoolUpdate(concurrency_limit=1))
    finally:
        prefect_client.update_work_pool(pool, WorkPoolUpdate(is_paused=False))
    try:
        high_done, low_done = wait_final(prefect_client, high.id), wait_final(prefect_client, low.id)
    finally:
        prefect_client.update_work_pool(pool, WorkPoolUpdate(concurrency_limit=None))
    assert high_done.state.is_completed() and low_done.state.is_completed()
    assert low_done.start_time >= high_done.end_time, (high_done.end_time, low_done.start_time)

    # A deployment limited to one run at a time: the second waits (AwaitingConcurrencySlot), then runs.
    limited = deploy("limited", concurrency_limit=1)
    first, second = (prefect_client.create_flow_run_from_deployment(
        limited, parameters={"out_dir": str(tmp_path), "sleep": 2}) for _ in range(2))
    first_done, second_done = wait_final(prefect_client, first.id), wait_final(prefect_client, second.id)
    assert first_done.state.is_completed() and second_done.state.is_completed()
    ordered = sorted((first_done, second_done), key=lambda r: r.start_time)
    assert ordered[1].start_time >= ordered[0].end_time


def test_a_run_retried_right_after_it_failed_runs_again(prefect_client, deploy, worker, tmp_path):
    from prefect.states import AwaitingRetry

    run = prefect_client.create_flow_run_from_deployment(deploy("retried"),
                                                         parameters={"how": "raise", "out_dir": str(tmp_path)})
    assert wait_final(prefect_client, run.id).state.is_failed()
    # What the UI's "Retry" sends. The old worker ignored a run id that had ended less than 120 s ago.
    prefect_client.set_flow_run_state(run.id, AwaitingRetry(message="Retry from the UI"), force=True)
    wait_for(lambda: len(records(tmp_path, run.id)) == 2, "the retried run's second execution", timeout=30)
    assert wait_final(prefect_client, run.id).state.is_failed()
    # A retry due in 3 s: the worker (polling every 30 s) sees it ahead and starts it at its time, not at a poll.
    due = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=3)
    prefect_client.set_flow_run_state(run.id, AwaitingRetry(scheduled_time=due, message="Retry in 3 s"), force=True)
    wait_for(lambda: len(records(tmp_path, run.id)) == 3, "the delayed retry's execution", timeout=25)
    started = records(tmp_path, run.id)[-1]["at"]
    assert due.timestamp() - 0.5 <= started < due.timestamp() + 10, started - due.timestamp()


def test_a_worker_only_takes_runs_of_its_queues(prefect_client, deploy, worker, tmp_path):
    other_queue = prefect_client.create_flow_run_from_deployment(deploy("on-q2", queue="q2"))
    ours = prefect_client.create_flow_run_from_deployment(deploy("on-q1", queue="q1"),
                                                          parameters={"out_dir": str(tmp_path)})
    assert wait_final(prefect_client, ours.id).state.is_completed()
    assert still_scheduled(prefect_client, other_queue.id)
    assert str(other_queue.id) not in worker.log_text()
    prefect_client.delete_flow_run(other_queue.id)


def test_two_workers_never_run_the_same_run(prefect_client, deploy, worker, second_worker, tmp_path):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    other = second_worker()
    deployment_id = deploy("race")
    runs = [prefect_client.create_flow_run_from_deployment(deployment_id, parameters={"out_dir": str(tmp_path)})
            for _ in range(6)]  # more than either worker's --limit 4: both must take some
    for run in runs:
        assert wait_final(prefect_client, run.id).state.is_completed()

    assert all(len(records(tmp_path, run.id)) == 1 for run in runs), {str(r.id): records(tmp_path, r.id) for r in runs}
    deadline = time.monotonic() + 20  # task runs are recorded from their events, a moment after the fact
    while True:
        task_runs = prefect_client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in runs])))
        per_run = {run.id: sum(1 for t in task_runs if t.flow_run_id == run.id) for run in runs}
        if min(per_run.values()) >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert set(per_run.values()) == {1}, per_run
    claims = {w.name: sum(w.log_text().count(f"({run.id}) of deployment") for run in runs) for w in (worker, other)}
    print(f"\nruns started per worker: {claims}")
    assert sum(claims.values()) == 6


def test_a_killed_workers_run_is_crashed_by_its_successor_which_takes_new_runs(prefect_client, deploy,
                                                                             second_worker, tmp_path):
    killed = second_worker()
    deployment_id = deploy("orphaned", queue="q2")
    run = prefect_client.create_flow_run_from_deployment(deployment_id,
                                                         parameters={"out_dir": str(tmp_path), "sleep": 120})
    (seen,) = wait_for(lambda: records(tmp_path, run.id), "the run to be orphaned is running")
    killed.proc.send_signal(signal.SIGKILL)
    killed.proc.wait(30)
    # Its run dies with it (nothing would cancel it or clean up after it any more) ...
    wait_for(lambda: not Path(f"/proc/{seen['pid']}").exists(), "the killed worker's run process ends", timeout=30)
    assert prefect_client.read_flow_run(run.id).state.is_running()
    assert Path(seen["cwd"]).is_dir()  # its workspace (a build's .env files) is still there

    successor = second_worker()  # same name, same host: it finds the record at start
    crashed = wait_final(prefect_client, run.id, timeout=30)
    assert crashed.state.is_crashed() and "ended while its worker warm-b was not watching it" in crashed.state.message
    assert not Path(seen["cwd"]).exists()
    assert "reconciliation: flow run" in successor.log_text()
    after = prefect_client.create_flow_run_from_deployment(deployment_id, parameters={"out_dir": str(tmp_path)})
    assert wait_final(prefect_client, after.id).state.is_completed()
    assert f"({after.id}) of deployment" in successor.log_text()


def test_sigterm_waits_for_runs_kills_stragglers_and_exits_0(prefect_client, deploy, second_worker, tmp_path):
    stopping = second_worker()  # --shutdown-timeout 4
    deployment_id = deploy("stop", queue="q2")
    short = prefect_client.create_flow_run_from_deployment(deployment_id,
                                                           parameters={"out_dir": str(tmp_path), "sleep": 2})
    long = prefect_client.create_flow_run_from_deployment(deployment_id,
                                                          parameters={"out_dir": str(tmp_path), "sleep": 120})
    wait_for(lambda: records(tmp_path, short.id) and records(tmp_path, long.id), "both runs are running")

    assert stopping.stop(timeout=60) == 0, stopping.log_text()[-3000:]
    assert not tagged_pids(stopping.tag)
    assert prefect_client.read_flow_run(short.id).state.is_completed()
    killed = prefect_client.read_flow_run(long.id)
    assert killed.state.is_crashed() and "worker was stopping" in killed.state.message, killed.state
    assert "SIGTERM received" in stopping.log_text()
