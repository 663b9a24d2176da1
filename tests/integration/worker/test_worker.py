"""``opsflow worker start`` against the session's real Prefect server, as real subprocesses.

The probe flow (``flowcode.py``) is deployed from a temporary directory, so it is never in the
worker's preload list: every run also proves the worker runs flows it did not preload.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
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
        time.sleep(0.2)
    raise AssertionError(f"flow run {run_id} not final after {timeout} s: {run.state}")


def first_task_start(client, run_id, timeout: float = 20):
    """The earliest ``start_time`` of the run's task runs (recorded from events, so it may lag a little)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        starts = [t.start_time for t in task_runs if t.start_time is not None]
        if starts:
            return min(starts)
        time.sleep(0.2)
    raise AssertionError(f"no started task run for flow run {run_id}")


def records(out_dir: Path, run_id) -> list[dict]:
    path = out_dir / f"{run_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_runs_complete_and_are_claimed_from_the_event_stream(prefect_client, deploy, worker, tmp_path):
    deployment_id = deploy("latency")
    latencies = []
    for _ in range(5):
        run = prefect_client.create_flow_run_from_deployment(deployment_id, parameters={"out_dir": str(tmp_path)})
        done = wait_final(prefect_client, run.id)
        assert done.state.is_completed(), done.state
        latencies.append((first_task_start(prefect_client, run.id) - done.created).total_seconds())
    ordered = sorted(latencies)
    p50, p95 = statistics.median(ordered), ordered[-1]
    print(f"\ncreated -> first task running, 5 runs: {[f'{x:.3f}' for x in latencies]} s; "
          f"p50 {p50:.3f} s, max {p95:.3f} s")
    # Timings are the benchmark's business (bench/trigger.py measures them against the stock worker).
    assert "claimed flow run" in worker.log_text()


def test_each_run_has_its_own_process_directory_and_env(prefect_client, deploy, code_dir, worker, tmp_path):
    deployment_id = deploy("isolation", env={"OPSFLOW_PROBE_FROM": "deployment", "OPSFLOW_PROBE_KEEP": "kept"})
    first = prefect_client.create_flow_run_from_deployment(
        deployment_id, parameters={"out_dir": str(tmp_path)},
        job_variables={"env": {"OPSFLOW_PROBE_FROM": "flow-run", "OPSFLOW_PROBE_ONLY_FIRST": "1"}})
    second = prefect_client.create_flow_run_from_deployment(deployment_id, parameters={"out_dir": str(tmp_path)})
    for run in (first, second):
        assert wait_final(prefect_client, run.id).state.is_completed()
    (one,), (two,) = records(tmp_path, first.id), records(tmp_path, second.id)

    assert one["env"] == {"OPSFLOW_PROBE_FROM": "flow-run", "OPSFLOW_PROBE_KEEP": "kept",
                          "OPSFLOW_PROBE_ONLY_FIRST": "1"}
    assert two["env"] == {"OPSFLOW_PROBE_FROM": "deployment", "OPSFLOW_PROBE_KEEP": "kept"}

    assert Path(one["code"]) == code_dir.resolve()  # imported in place from the deployment's directory
    assert one["pid"] != two["pid"] and worker.proc.pid not in (one["pid"], one["ppid"], two["pid"], two["ppid"])
    assert one["cwd"] != two["cwd"]
    for cwd in (one["cwd"], two["cwd"]):
        assert Path(cwd).name.startswith("opsflow-run-") and Path(cwd).parent == Path(tempfile.gettempdir())
    deadline = time.monotonic() + 10  # the worker removes a run's directory once its process has exited
    while (Path(one["cwd"]).exists() or Path(two["cwd"]).exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(one["cwd"]).exists() and not Path(two["cwd"]).exists()


@pytest.mark.parametrize(("how", "message"), [
    ("exit", "exited with code 3"), ("kill", "killed by SIGKILL"), ("segv", "killed by SIGSEGV")])
def test_a_run_whose_process_dies_is_crashed_and_the_worker_goes_on(prefect_client, deploy, worker, tmp_path, how,
                                                                    message):
    deployment_id = deploy("crash")
    dying = prefect_client.create_flow_run_from_deployment(deployment_id, parameters={"how": how})
    crashed = wait_final(prefect_client, dying.id)
    assert crashed.state.is_crashed(), crashed.state
    assert message in crashed.state.message

    assert worker.proc.poll() is None
    after = prefect_client.create_flow_run_from_deployment(deployment_id, parameters={"out_dir": str(tmp_path)})
    assert wait_final(prefect_client, after.id).state.is_completed()


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


def test_a_flow_that_raises_is_failed_not_crashed(prefect_client, deploy, worker):
    run = prefect_client.create_flow_run_from_deployment(deploy("crash"), parameters={"how": "raise"})
    failed = wait_final(prefect_client, run.id)
    assert failed.state.is_failed() and "failed on purpose" in failed.state.message, failed.state


def test_a_worker_only_takes_runs_of_its_queues(prefect_client, deploy, worker, tmp_path):
    other_queue = prefect_client.create_flow_run_from_deployment(deploy("on-q2", queue="q2"))
    ours = prefect_client.create_flow_run_from_deployment(deploy("on-q1", queue="q1"),
                                                          parameters={"out_dir": str(tmp_path)})
    assert wait_final(prefect_client, ours.id).state.is_completed()
    time.sleep(1.5)  # longer than a poll period
    left = prefect_client.read_flow_run(other_queue.id)
    assert left.state.is_scheduled(), left.state
    assert str(other_queue.id) not in worker.log_text()
    prefect_client.delete_flow_run(other_queue.id)


def test_two_workers_never_run_the_same_run(prefect_client, deploy, worker, start_worker, tmp_path):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    other = start_worker("--queue", "default", "--limit", "4", "--preload", "prefect", name="warm-b")
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
    print(f"\nruns claimed per worker: {claims}")
    assert sum(claims.values()) == 6


def test_sigterm_waits_for_runs_kills_stragglers_and_exits_0(prefect_client, deploy, start_worker, tmp_path):
    stopping = start_worker("--queue", "q2", "--shutdown-timeout", "4", "--preload", "prefect", name="warm-stop")
    deployment_id = deploy("stop", queue="q2")
    short = prefect_client.create_flow_run_from_deployment(deployment_id,
                                                           parameters={"out_dir": str(tmp_path), "sleep": 2})
    long = prefect_client.create_flow_run_from_deployment(deployment_id,
                                                          parameters={"out_dir": str(tmp_path), "sleep": 120})
    deadline = time.monotonic() + 30
    while not (records(tmp_path, short.id) and records(tmp_path, long.id)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert records(tmp_path, short.id) and records(tmp_path, long.id), stopping.log_text()[-3000:]

    assert stopping.stop(timeout=60) == 0, stopping.log_text()[-3000:]
    assert not tagged_pids(stopping.tag)
    assert prefect_client.read_flow_run(short.id).state.is_completed()
    killed = prefect_client.read_flow_run(long.id)
    assert killed.state.is_crashed() and "worker was stopping" in killed.state.message, killed.state
    assert "SIGTERM received" in stopping.log_text()
