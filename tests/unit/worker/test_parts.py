"""The worker's pure parts, without a server: run checks, env merging, pull-step shortcut, config."""

from __future__ import annotations

import datetime as dt
import os
import sys
import types
import uuid
from pathlib import Path

import pytest

from opsflow.core.errors import InvalidInput
from opsflow.worker.claim import check_run, exit_message
from opsflow.worker.config import WorkerConfig, default_preload
from opsflow.worker.runner import apply_env, forget_project_modules, job_env, plain_directory

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def flow_run(state, queue="default", deployment=True):
    from prefect.client.schemas.objects import FlowRun

    return FlowRun(flow_id=uuid.uuid4(), deployment_id=uuid.uuid4() if deployment else None, state=state,
                   work_queue_name=queue)


def test_check_run_claims_only_due_scheduled_runs_of_its_queues():
    from prefect.states import Pending, Scheduled

    assert check_run(flow_run(Scheduled(scheduled_time=NOW)), (), now=NOW).ok
    assert check_run(flow_run(Scheduled(scheduled_time=NOW), queue="q1"), ("q1", "q2"), now=NOW).ok
    assert not check_run(flow_run(Scheduled(scheduled_time=NOW), queue="q3"), ("q1",), now=NOW).ok
    assert not check_run(flow_run(Pending()), (), now=NOW).ok
    assert not check_run(flow_run(Scheduled(scheduled_time=NOW), deployment=False), (), now=NOW).ok
    later = check_run(flow_run(Scheduled(scheduled_time=NOW + dt.timedelta(seconds=30))), (), now=NOW)
    assert not later.ok and later.due_in == 30


def test_exit_messages_name_the_code_or_the_signal():
    assert exit_message(3) == "Flow run process exited with code 3."
    assert exit_message(-9) == "Flow run process was killed by SIGKILL."
    assert exit_message(-11) == "Flow run process was killed by SIGSEGV."


def test_job_env_merges_pool_deployment_and_run_and_none_unsets():
    pool = {"variables": {"properties": {"env": {"default": {"A": "pool", "B": "pool"}}}}}
    env = job_env(pool, {"env": {"B": "deployment", "C": 1}}, {"env": {"C": "run", "D": None}})
    assert env == {"A": "pool", "B": "deployment", "C": "run", "D": None}
    environ = {"D": "old", "E": "kept"}
    apply_env(env, environ)
    assert environ == {"A": "pool", "B": "deployment", "C": "run", "E": "kept"}
    assert job_env(None, None, None) == {}


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


def test_config_defaults_and_validation():
    cfg = WorkerConfig(pool="vault-build")
    assert cfg.name.startswith("vault-build-") and cfg.limit == 4
    assert "flows.gitops_pr" in cfg.preload and cfg.preload == default_preload()
    assert WorkerConfig(pool="p", preload=("flows.smoke",)).preload == ("flows.smoke",)
    for bad in ({"pool": ""}, {"pool": "p", "limit": 0}, {"pool": "p", "queues": ("",)},
                {"pool": "p", "poll_interval": 0}):
        with pytest.raises(InvalidInput):
            WorkerConfig(**bad)
