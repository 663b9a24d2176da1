"""Fixtures of the worker tests: a work pool of type ``opsflow`` of their own, the probe flow deployed from a temp
dir, and ``opsflow worker start`` run as real subprocesses against the session's Prefect server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.paths import ROOT, SUPPORT
from tests.support.workers import TAG, WorkerProcess, tagged_pids, wait_online

#: Queues of the test pool and their priorities (1 is served first).
QUEUES = {"default": 1, "q1": 2, "q2": 3}


@pytest.fixture(scope="module")
def prefect_client(stack):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


@pytest.fixture(scope="module")
def pool(prefect_client):
    """A pool of type ``opsflow`` (its own template) with the queues of QUEUES; removed afterwards."""
    from prefect.client.schemas.actions import WorkPoolCreate

    from opsflow.core.pools import job_template

    name = f"warm-test-{uuid.uuid4().hex[:6]}"
    prefect_client.create_work_pool(WorkPoolCreate(name=name, type="opsflow", base_job_template=job_template()))
    for queue, priority in QUEUES.items():
        if queue == "default":  # created with the pool, priority 1
            assert prefect_client.read_work_queue_by_name(queue, work_pool_name=name).priority == priority
        else:
            prefect_client.create_work_queue(name=queue, work_pool_name=name, priority=priority)
    try:
        yield name
    finally:
        for deployment in prefect_client.read_deployments():
            if deployment.work_pool_name == name:
                prefect_client.delete_deployment(deployment.id)
        prefect_client.delete_work_pool(name)


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("worker-flows")
    shutil.copy(SUPPORT / "worker_flowcode.py", directory / "flowcode.py")
    return directory


@pytest.fixture(scope="module")
def deploy(pool, code_dir):
    """``deploy(name, queue="default", env=None, **options) -> deployment id`` of the probe flow in ``pool``;
    ``job_variables`` and ``concurrency_limit`` pass through to ``flow.deploy``."""
    from prefect import flow

    def _deploy(name: str, queue: str = "default", env: dict | None = None, **options):
        source = flow.from_source(source=str(code_dir), entrypoint="flowcode.py:probe")
        job_variables = {**({"env": env} if env else {}), **options.pop("job_variables", {})}
        return source.deploy(name=name, work_pool_name=pool, work_queue_name=queue, build=False, push=False,
                             print_next_steps=False, ignore_warnings=True, job_variables=job_variables or None,
                             **options)

    return _deploy


@pytest.fixture(scope="module")
def start_worker(pool, prefect_client, tmp_path_factory):
    """``start_worker(*args, name=...) -> WorkerProcess``, online; every one is stopped (and checked) at the end."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("worker-logs")

    def _start(*args: str, name: str, prefect_cli: bool = False, env: dict | None = None) -> WorkerProcess:
        """``opsflow worker start ...``, or with ``prefect_cli`` ``prefect worker start --type opsflow``."""
        tag = uuid.uuid4().hex
        log = logs / f"{name}-{len(started)}.log"
        if prefect_cli:
            prefect = Path(sys.executable).with_name("prefect")
            argv = [str(prefect), "worker", "start", "--pool", pool, "--type", "opsflow", "--name", name, *args]
        else:
            argv = [sys.executable, "-m", "opsflow.worker", "start", "--pool", pool, "--name", name, *args]
        with open(log, "wb") as out:
            # The probe flows import none of the libraries a worker warms by default (the stack's workers do).
            proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "OPSFLOW_WORKER_WARM": "none", **(env or {}), TAG: tag})
        worker = WorkerProcess(proc, log, name, tag, argv)
        started.append(worker)
        wait_online(prefect_client, pool, worker)
        return worker

    try:
        yield _start
    finally:
        for worker in started:
            if worker.proc.poll() is None:
                worker.stop()
        leftovers = {w.name: tagged_pids(w.tag) for w in started}
        assert not any(leftovers.values()), f"workers left processes behind: {leftovers}"


@pytest.fixture(scope="module")
def worker(start_worker):
    """The tests' main worker: queues ``default`` and ``q1`` of the pool, the probe's modules not preloaded. It polls
    only every 30 s: what these tests see it start, it heard of from the event stream or woke for by a timer."""
    return start_worker("--queue", "default", "--queue", "q1", "--limit", "4", "--preload", "prefect",
                        "--poll-interval", "30", name="warm-a")


@pytest.fixture(scope="module")
def second_worker(start_worker):
    """``second_worker()`` -> the worker ``warm-b`` (queues ``default`` and ``q2``), started again if a test stopped
    or killed it: the tests that need a second worker share one start. It is started by Prefect's own CLI,
    ``prefect worker start --type opsflow`` (opsflow's settings from the environment)."""
    current: list[WorkerProcess] = []

    def _get() -> WorkerProcess:
        if not current or current[-1].proc.poll() is not None:
            current.append(start_worker(
                "--work-queue", "default", "--work-queue", "q2", "--limit", "4", name="warm-b", prefect_cli=True,
                env={"OPSFLOW_WORKER_PRELOAD": "prefect", "OPSFLOW_WORKER_SHUTDOWN_TIMEOUT": "4"}))
        return current[-1]

    return _get
