"""The worker's pure parts, without a server: job variables, env, run records and orphans, events, settings."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import pytest

from opsflow.core.errors import InvalidInput
from opsflow.worker.config import WorkerSettings, default_preload
from opsflow.worker.job import OpsflowJobConfiguration, OpsflowVariables
from opsflow.worker.records import (
    CLAIM_GRACE_SECONDS,
    RunRecord,
    RunRecords,
    make_workdir,
    run_workdir,
    unrecorded_orphan,
    worker_dir_name,
)
from opsflow.worker.runner import apply_env, forget_project_modules, plain_directory, unknown_parameters
from opsflow.worker.states import build_state, exit_message, state_spec
from opsflow.worker.watch import classify, event_filter
from opsflow.worker.zygote import Zygote, kill_children

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def test_the_opsflow_type_is_registered_with_prefect_and_its_template_is_valid_for_the_server():
    from importlib.metadata import entry_points

    from prefect.server.schemas.actions import WorkPoolCreate
    from prefect.utilities.dispatch import get_registry_for_type
    from prefect.workers.base import BaseWorker

    from opsflow.worker.prefect_worker import OpsflowWorker

    # What `prefect worker start --type opsflow` does: load the prefect.collections entry points, look the type up.
    (entry,) = [e for e in entry_points(group="prefect.collections") if e.name == "opsflow"]
    entry.load()
    assert get_registry_for_type(BaseWorker)["opsflow"] is OpsflowWorker
    template = OpsflowWorker.get_default_base_job_template()
    # The server's own validation of a pool's template (every variable the job configuration uses is declared).
    WorkPoolCreate(name="p", type="opsflow", base_job_template=template)
    assert set(template["variables"]["properties"]) == {"env", "working_dir_root", "stream_output", "run_timeout"}
    assert template["variables"]["additionalProperties"] is False
    for name, schema in template["variables"]["properties"].items():
        assert schema.get("title") and schema.get("description"), name  # the UI form shows both


def test_job_variables_are_validated_as_the_server_validates_a_deployments():
    from prefect.utilities.schema_tools import ValidationError, validate

    schema = job_template_variables()
    validate({"env": {"A": "1", "B": None}, "run_timeout": 60, "stream_output": False}, schema, raise_on_error=True,
             preprocess=True, ignore_required=True, allow_none_with_default=True)
    with pytest.raises(ValidationError, match="'run_timout' was unexpected"):
        validate({"run_timout": 60}, schema, raise_on_error=True, preprocess=True, ignore_required=True,
                 allow_none_with_default=True)
    with pytest.raises(ValidationError, match="run_timeout"):
        validate({"run_timeout": 0}, schema, raise_on_error=True, preprocess=True, ignore_required=True)


def job_template_variables() -> dict:
    from opsflow.worker.prefect_worker import OpsflowWorker

    return OpsflowWorker.get_default_base_job_template()["variables"]


def test_working_dir_root_must_be_absolute():
    assert OpsflowVariables(working_dir_root="/srv/runs").working_dir_root == Path("/srv/runs")
    with pytest.raises(ValueError, match="absolute"):
        OpsflowVariables(working_dir_root="runs")
    with pytest.raises(ValueError, match="absolute"):
        OpsflowJobConfiguration(working_dir_root="runs")


def test_the_run_environment_keeps_prefects_merge_and_unsets_nulls():
    from prefect.client.schemas.objects import FlowRun

    config = OpsflowJobConfiguration(env={"A": "deployment", "DROP": None})
    config.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="r"))
    env = config.run_environment(defaults={"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", "A": "default"})
    assert env["A"] == "deployment" and env["DROP"] is None and env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    assert env["PREFECT__FLOW_RUN_ID"]  # Prefect's own run ids come with it
    environ = {"DROP": "old", "E": "kept"}
    assert apply_env({"A": "1", "DROP": None}, environ) is False
    assert environ == {"A": "1", "E": "kept"}
    assert apply_env({"PREFECT__FLOW_RUN_ID": "x"}, environ) is False  # a run id, not a setting
    assert apply_env({"PREFECT_API_URL": "http://elsewhere/api"}, environ) is True


def test_unknown_flow_parameters_are_named():
    def flow_fn(app: str, sha: str, pr: int = 0):
        return app, sha, pr

    def open_fn(app: str, **rest):
        return app, rest

    assert unknown_parameters(flow_fn, {"app": "a", "sha": "b"}) == []
    assert unknown_parameters(flow_fn, {"app": "a", "nope": 1, "also": 2}) == ["also", "nope"]
    assert unknown_parameters(open_fn, {"app": "a", "nope": 1}) == []


def test_exit_messages_and_final_states():
    assert exit_message(3) == "Flow run process exited with code 3."
    assert exit_message(-9) == "Flow run process was killed by SIGKILL."
    assert exit_message(-11) == "Flow run process was killed by SIGSEGV."
    crashed = build_state(state_spec("crashed", "gone"))
    assert crashed.is_crashed() and crashed.message == "gone"
    timed_out = build_state(state_spec("timed-out", "too long"))
    assert timed_out.is_failed() and timed_out.name == "TimedOut"
    assert build_state(state_spec("cancelled", "stop")).is_cancelled()


def test_run_records_round_trip_and_torn_ones_are_dropped(tmp_path):
    records = RunRecords(tmp_path / "records")
    assert records.load() == []
    record = RunRecord(str(uuid.uuid4()), 123, 456, "/tmp/x", "run (id)")
    records.write(record)
    (tmp_path / "records" / "torn.json").write_text('{"flow_run_id": ')
    assert records.load() == [record]
    assert not (tmp_path / "records" / "torn.json").exists()
    records.remove(record.flow_run_id)
    assert records.load() == []


def test_workdirs_are_per_worker_and_per_run(tmp_path):
    run_id = uuid.uuid4()
    assert worker_dir_name("edge-1/host name") == "opsflow-worker-edge-1_host_name"
    path = make_workdir(tmp_path, "w", run_id)
    assert path == run_workdir(tmp_path, "w", run_id) == tmp_path / "opsflow-worker-w" / str(run_id)
    (path / ".env").write_text("TOKEN=x")
    assert not any(make_workdir(tmp_path, "w", run_id).iterdir())  # a leftover of an earlier attempt is gone
    assert oct(path.stat().st_mode & 0o777) == "0o700"


def orphan_case(**overrides):
    from prefect.client.schemas.objects import FlowRun
    from prefect.states import Pending, Running

    values = {"labels": {"prefect.worker.name": "w"}, "infrastructure_pid": "host:4242", "state": Running()}
    values.update(overrides)
    if values["state"] == "pending-old":
        values["state"] = Pending()
        values["state"].timestamp = NOW - dt.timedelta(seconds=CLAIM_GRACE_SECONDS + 1)
    run = FlowRun(flow_id=uuid.uuid4(), name="r", labels=values["labels"],
                  infrastructure_pid=values["infrastructure_pid"], state=values["state"])
    return run


@pytest.mark.parametrize(("overrides", "alive", "known", "expected"), [
    ({}, False, False, "pid 4242 on host"),                           # its process is gone
    ({}, True, False, None),                                          # still running (an orphan of a zygote crash)
    ({}, False, True, None),                                          # this worker runs it or has a record
    ({"labels": {"prefect.worker.name": "other"}}, False, False, None),  # another worker's
    ({"infrastructure_pid": "elsewhere:4242"}, False, False, None),  # another host's
    ({"infrastructure_pid": None, "state": "pending-old"}, False, False, "stopped before it could start"),
    ({"infrastructure_pid": None}, False, False, None),              # being claimed right now
])
def test_which_unfinished_runs_are_orphans_of_this_worker(overrides, alive, known, expected):
    run = orphan_case(**overrides)
    why = unrecorded_orphan(run, worker_name="w", host="host", known={run.id} if known else set(),
                            pid_alive=lambda pid: alive, now=NOW.timestamp())
    assert (why is None) if expected is None else (expected in why)


def event(name: str, resource: str, queue: str | None = None):
    from prefect.events import Event

    related = [{"prefect.resource.id": "prefect.work-queue.q", "prefect.resource.role": "work-queue",
                "prefect.resource.name": queue}] if queue else []
    return Event(event=name, resource={"prefect.resource.id": resource}, related=related)


def test_the_deployment_of_a_scheduled_run_is_read_from_its_event():
    from prefect.events import Event

    from opsflow.worker.watch import scheduled_deployment

    deployment, run = uuid.uuid4(), uuid.uuid4()
    related = [{"prefect.resource.id": f"prefect.deployment.{deployment}", "prefect.resource.role": "deployment"}]
    scheduled = Event(event="prefect.flow-run.Scheduled", resource={"prefect.resource.id": f"prefect.flow-run.{run}"},
                      related=related)
    assert scheduled_deployment(scheduled) == deployment
    assert scheduled_deployment(scheduled.model_copy(update={"event": "prefect.flow-run.Completed"})) is None


def test_events_wake_the_poll_or_cancel_and_other_queues_are_ignored():
    run = uuid.uuid4()
    assert classify(event("prefect.flow-run.Cancelling", f"prefect.flow-run.{run}"), ()) == ("cancel", run)
    assert classify(event("prefect.flow-run.Scheduled", f"prefect.flow-run.{run}", "q1"), ("q1",)) == ("wake", None)
    assert classify(event("prefect.flow-run.Scheduled", f"prefect.flow-run.{run}", "q2"), ("q1",))[0] == "ignore"
    # A run of another queue ending frees a slot under the pool's limit.
    assert classify(event("prefect.flow-run.Completed", f"prefect.flow-run.{run}", "q2"), ("q1",))[0] == "wake"
    assert classify(event("prefect.work-pool.ready", "prefect.work-pool.x"), ()) == ("wake", None)
    assert classify(event("prefect.flow-run.Running", f"prefect.flow-run.{run}"), ())[0] == "ignore"
    pool = uuid.uuid4()
    subscription = event_filter(pool)
    assert subscription.any_resource.id == [f"prefect.work-pool.{pool}"]
    assert not subscription.event.includes(event("prefect.flow-run.heartbeat", f"prefect.flow-run.{run}"))
    assert subscription.event.includes(event("prefect.work-queue.paused", "prefect.work-queue.q"))


def test_a_dead_workers_zygote_kills_its_runs_process_groups():
    def group(pgid: int) -> list[str]:
        return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()

    child = subprocess.Popen([sys.executable, "-c", "import subprocess, time; "
                              "subprocess.Popen(['sleep', '60']); time.sleep(60)"], start_new_session=True)
    deadline = time.monotonic() + 30
    while len(group(child.pid)) < 2 and time.monotonic() < deadline:  # the run and what it started
        time.sleep(0.05)
    assert len(group(child.pid)) == 2
    kill_children({child.pid})  # reaps it, as the zygote does
    assert not Path(f"/proc/{child.pid}").exists()
    while group(child.pid) and time.monotonic() < deadline:  # the killed grandchild is reaped by init
        time.sleep(0.05)
    assert group(child.pid) == []


def test_a_child_that_exits_before_its_spawner_resumes_still_reports_its_exit():
    """The zygote's "spawned" and "exited" lines of a run that dies at once arrive in one read."""
    import asyncio
    import json

    class Pipe:
        def __init__(self, reader):
            self.reader = reader

        def write(self, data):
            key = json.loads(data)["key"]
            self.reader.feed_data(json.dumps({"op": "spawned", "key": key, "pid": 4242}).encode() + b"\n"
                                  + json.dumps({"op": "exited", "pid": 4242, "code": -11}).encode() + b"\n")

        async def drain(self):
            pass

    async def scenario():
        zygote, reader = Zygote(modules=[], paths=[]), asyncio.StreamReader()
        zygote._writer = Pipe(reader)
        zygote._reader_task = asyncio.create_task(zygote._read(reader))
        child = await zygote.spawn("run-1", {})
        code = await asyncio.wait_for(child.exited, 5)
        reader.feed_eof()
        zygote._closing = True
        await zygote._reader_task
        return child.pid, code

    assert asyncio.run(scenario()) == (4242, -11)


def test_a_run_due_before_the_next_poll_wakes_the_poll_at_its_time_every_time():
    import asyncio

    from opsflow.worker.prefect_worker import OpsflowWorker

    async def scenario():
        worker = types.SimpleNamespace(_due_timer=None, _wake=asyncio.Event())
        woken = []
        for delay in (0.05, 0.05, 0.3):  # the second after the first timer fired: it must be armed again
            worker._wake.clear()
            OpsflowWorker._wake_at(worker, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay))
            await asyncio.wait_for(worker._wake.wait(), 2)
            woken.append(delay)
        worker._wake.clear()  # an earlier wake still to come is kept; a later one does not replace it
        OpsflowWorker._wake_at(worker, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.1))
        first = worker._due_timer
        OpsflowWorker._wake_at(worker, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60))
        assert worker._due_timer is first
        OpsflowWorker._wake_at(worker, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))  # already due: at once
        assert worker._due_timer is not first and first.cancelled()
        await asyncio.wait_for(worker._wake.wait(), 1)
        return woken

    assert asyncio.run(scenario()) == [0.05, 0.05, 0.3]


@pytest.mark.parametrize(("steps", "expected"), [
    ([{"prefect.deployments.steps.set_working_directory": {"directory": "/srv/app"}}], Path("/srv/app")),
    ([{"prefect.deployments.steps.pull.set_working_directory": {"directory": "/srv"}},
      {"prefect.deployments.steps.set_working_directory": {"directory": "app"}}], Path("/srv/app")),
    ([{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PROJECT }}"}}], None),
    ([{"prefect.deployments.steps.set_working_directory": {"directory": "/srv", "requires": "x"}}], None),
    ([{"prefect.deployments.steps.git_clone": {"repository": "https://example.invalid/r.git"}}], None),
    ([], None),
    (None, None),
])
def test_only_literal_set_working_directory_steps_skip_the_step_runner(steps, expected):
    assert plain_directory(steps) == expected


def test_forget_project_modules_drops_only_that_checkout(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    package = types.ModuleType("pkg")
    package.__file__ = str(tmp_path / "pkg" / "__init__.py")
    single = types.ModuleType("single")
    single.__file__ = str(tmp_path / "single.py")
    for name, module in {"pkg": package, "pkg.sub": types.ModuleType("pkg.sub"), "single": single}.items():
        monkeypatch.setitem(sys.modules, name, module)
    dropped = forget_project_modules(tmp_path)
    assert set(dropped) == {"pkg", "pkg.sub", "single"}
    assert "pkg" not in sys.modules and "json" in sys.modules


def test_a_preloaded_project_file_that_changed_on_disk_is_noticed(tmp_path, monkeypatch):
    from opsflow.worker import runner

    module_file = tmp_path / "probe_tasks.py"
    module_file.write_text("VALUE = 1\n")
    module = types.ModuleType("probe_tasks")
    module.__file__ = str(module_file)
    monkeypatch.setitem(sys.modules, "probe_tasks", module)
    monkeypatch.setattr(runner, "PRELOADED", {})
    runner.remember_preloaded(tmp_path)
    assert runner.PRELOADED and not runner.preloaded_changed()
    stat = module_file.stat()
    os.utime(module_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert runner.preloaded_changed()


def test_settings_defaults_environment_and_validation():
    settings = WorkerSettings()
    assert settings.limit == 4 and "flows.gitops_pr" in settings.preload and settings.preload == default_preload()
    assert WorkerSettings(preload=("flows.smoke",)).preload == ("flows.smoke",)
    assert settings.with_limit(None) is settings and settings.with_limit(2).limit == 2
    from_env = WorkerSettings.from_env({"OPSFLOW_WORKER_PRELOAD": "flows.smoke, prefect",
                                        "OPSFLOW_WORKER_SHUTDOWN_TIMEOUT": "5", "OPSFLOW_WORKER_WORKDIR_ROOT": "/srv"})
    assert from_env.preload == ("flows.smoke", "prefect") and from_env.shutdown_timeout == 5
    assert from_env.workdir_root == Path("/srv")
    for bad in ({"limit": 0}, {"poll_interval": 0}, {"workdir_root": Path("relative")}):
        with pytest.raises(InvalidInput):
            WorkerSettings(**bad)
    with pytest.raises(InvalidInput, match="OPSFLOW_WORKER_SHUTDOWN_TIMEOUT"):
        WorkerSettings.from_env({"OPSFLOW_WORKER_SHUTDOWN_TIMEOUT": "soon"})


def test_a_preloaded_flow_is_used_as_it_is_and_anything_else_is_left_to_prefects_loader(tmp_path, monkeypatch):
    from prefect import flow

    from opsflow.worker.runner import preloaded_flow

    @flow
    def probe_flow():
        return 1

    module = types.ModuleType("pkg.flows_probe")
    module.__file__ = str(tmp_path / "flows_probe.py")
    module.probe = probe_flow
    module.helper = len
    monkeypatch.setitem(sys.modules, "pkg.flows_probe", module)
    assert preloaded_flow("flows_probe.py:probe", tmp_path) is probe_flow
    assert preloaded_flow("flows_probe.py:helper", tmp_path) is None  # not a flow: Prefect converts it
    assert preloaded_flow("other.py:probe", tmp_path) is None
    assert preloaded_flow("pkg.flows_probe:probe", tmp_path) is None  # a module path: Prefect's loader


def test_a_claims_deployment_is_read_once_and_a_flow_once_for_good():
    import asyncio

    from pydantic import BaseModel

    from opsflow.worker import reads

    class Deployment(BaseModel):
        id: str
        read: int
        job_variables: dict

    class Client:
        def __init__(self):
            self.calls: list[str] = []

        async def read_deployment(self, deployment_id):
            self.calls.append(f"deployment {deployment_id}")
            return Deployment(id=deployment_id, read=len(self.calls), job_variables={"env": {"A": "1"}})

        async def read_flow(self, flow_id):
            self.calls.append(f"flow {flow_id}")
            return {"id": flow_id}

        async def read_flow_run(self, run_id):
            return run_id

    now = [0.0]
    client = Client()
    cached = reads.RecentReads(client, clock=lambda: now[0])

    async def scenario():
        cached.prefetch_deployment("d")  # the event that scheduled the run started the read ...
        first = await cached.read_deployment("d")  # ... which the claim's first read shares
        first.job_variables["env"]["RUN"] = "merged in by Prefect"  # what resolve_for_flow_run does to it
        second = await cached.read_deployment("d")  # BaseWorker's second read of the same claim
        assert second.read == first.read and second.job_variables == {"env": {"A": "1"}}
        now[0] += reads.DEPLOYMENT_TTL_S
        assert (await cached.read_deployment("d")).read == 2  # a later claim reads it afresh
        await cached.read_flow("f")
        now[0] += 3600
        await cached.read_flow("f")
        assert await cached.read_flow_run("r") == "r"  # everything else goes to the client

    asyncio.run(scenario())
    assert client.calls == ["deployment d", "deployment d", "flow f"]
