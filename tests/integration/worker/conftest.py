"""Fixtures of the worker tests: a work pool of their own, the probe flow deployed from a temp dir,
and ``opsflow.worker`` started as real subprocesses against the session's Prefect server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TAG = "OPSFLOW_WORKER_TEST_TAG"
QUEUES = ("default", "q1", "q2")


def tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries ``OPSFLOW_WORKER_TEST_TAG=tag`` (a worker and all it started)."""
    needle = f"{TAG}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    log: Path
    name: str
    tag: str
    argv: list[str] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 90) -> int:
        """SIGTERM, wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker {self.name} did not stop within {timeout} s:\n{self.log_text()[-3000:]}")


def wait_online(client, pool: str, worker: WorkerProcess, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.proc.poll() is None, f"worker exited with {worker.proc.returncode}:\n{worker.log_text()[-3000:]}"
        # The heartbeat comes once the zygote is ready; the watcher subscribes right after it.
        online = any(w.name == worker.name and w.status.value == "ONLINE" for w in client.read_workers_for_work_pool(pool))
        if online and "subscribed to the flow-run events" in worker.log_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"worker {worker.name} not online within {timeout} s:\n{worker.log_text()[-3000:]}")


@pytest.fixture(scope="module")
def prefect_client(stack):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


@pytest.fixture(scope="module")
def pool(prefect_client):
    """A process work pool of the tests' own with the queues ``default``, ``q1``, ``q2``; removed afterwards."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    name = f"warm-test-{uuid.uuid4().hex[:6]}"
    prefect_client.create_work_pool(WorkPoolCreate(name=name, type="process",
                                                   base_job_template=ProcessWorker.get_default_base_job_template()))
    for queue in QUEUES[1:]:
        prefect_client.create_work_queue(name=queue, work_pool_name=name)
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
    shutil.copy(Path(__file__).with_name("flowcode.py"), directory / "flowcode.py")
    return directory


@pytest.fixture(scope="module")
def deploy(pool, code_dir):
    """``deploy(name, queue="default", env=None) -> deployment id`` of the probe flow in ``pool``."""
    from prefect import flow

    def _deploy(name: str, queue: str = "default", env: dict | None = None):
        source = flow.from_source(source=str(code_dir), entrypoint="flowcode.py:probe")
        return source.deploy(name=name, work_pool_name=pool, work_queue_name=queue, build=False, push=False,
                             print_next_steps=False, ignore_warnings=True,
                             job_variables={"env": env} if env else None)

    return _deploy


@pytest.fixture(scope="module")
def start_worker(pool, prefect_client, tmp_path_factory):
    """``start_worker(*args, name=...) -> WorkerProcess``, online; every one is stopped (and checked) at the end."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("worker-logs")

    def _start(*args: str, name: str) -> WorkerProcess:
        tag = uuid.uuid4().hex
        log = logs / f"{name}.log"
        argv = [sys.executable, "-m", "opsflow.worker", "start", "--pool", pool, "--name", name, *args]
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, TAG: tag})
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
    """The tests' main worker: queues ``default`` and ``q1`` of the pool."""
    return start_worker("--queue", "default", "--queue", "q1", "--limit", "4", name="warm-a")
