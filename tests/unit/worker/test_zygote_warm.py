"""A real zygote imports the libraries runs use once it is ready, serves a run asked for meanwhile first, skips
what is not installed, and stays single-threaded (forking from it stays safe) with all of them imported."""

from __future__ import annotations

import asyncio
import os
import time

from opsflow.worker.config import DEFAULT_WARM, EDGE_WARM, WorkerSettings, parse_warm
from opsflow.worker.zygote import Zygote


def test_warm_libraries_are_imported_after_ready_without_delaying_a_run_or_adding_a_thread():
    async def scenario():
        zygote = Zygote(modules=[], paths=[], warm=[*DEFAULT_WARM, "no_such_package_of_opsflow"])
        await zygote.start(timeout=120)
        try:
            child = await zygote.spawn("early", {})  # asked for at once: forked before the warm-up ends
            assert not zygote.warmed
            assert await asyncio.wait_for(child.exited, 60) == 1  # a job without a workdir: the child fails
            deadline = time.monotonic() + 180
            while not zygote.warmed and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            threads = len(os.listdir(f"/proc/{zygote.pid}/task"))
            return dict(zygote.warmed), threads
        finally:
            await zygote.stop()

    warmed, threads = asyncio.run(scenario())
    assert warmed["loaded"] == list(DEFAULT_WARM), warmed  # the dev environment has them all
    assert warmed["skipped"] == ["no_such_package_of_opsflow"] and warmed["failed"] == {}
    assert threads == 1 and warmed["threads"] == {}, "a library started a thread at import: forking is unsafe"


def test_a_library_that_starts_a_thread_is_named_and_warm_imports_start_no_native_thread_pools(tmp_path):
    seen = tmp_path / "seen.txt"
    (tmp_path / "threaded_lib_of_test.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n")
    (tmp_path / "env_of_test.py").write_text(
        f"import os\nopen({str(seen)!r}, 'w').write(os.environ.get('OPENBLAS_NUM_THREADS', '') + ' ' + "
        "os.environ.get('JE_ARROW_MALLOC_CONF', ''))\n")

    async def scenario():
        zygote = Zygote(modules=[], paths=[str(tmp_path)], warm=["env_of_test", "threaded_lib_of_test"])
        await zygote.start(timeout=120)
        try:
            deadline = time.monotonic() + 60
            while not zygote.warmed and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            return dict(zygote.warmed)
        finally:
            await zygote.stop()

    warmed = asyncio.run(scenario())
    assert warmed["threads"] == {"threaded_lib_of_test": 2}
    assert warmed["loaded"] == ["env_of_test", "threaded_lib_of_test"]
    assert seen.read_text() == "1 background_thread:false"


def test_warm_settings():
    assert WorkerSettings().warm == DEFAULT_WARM
    assert WorkerSettings.from_env({"OPSFLOW_WORKER_WARM": "none"}).warm == ()
    assert WorkerSettings.from_env({"OPSFLOW_WORKER_WARM": "boto3, docker"}).warm == ("boto3", "docker")
    assert parse_warm(["boto3,docker", "kubernetes.dynamic"]) == EDGE_WARM


def test_the_stacks_edge_worker_warms_edge_warm(tmp_path):
    """The stack may not import the worker package (the services are independent): its edge worker's ``--warm``
    is a literal, kept equal to ``EDGE_WARM`` here."""
    from blocks import names
    from opsflow.stack import StackConfig
    from opsflow.stack.services import build_specs

    specs = build_specs(StackConfig(home=tmp_path), {"s3_access_key": "a", "s3_secret_key": "b"}, "unix:///x.sock")
    argv = specs[f"worker-{names.EDGE_POOL}"].argv
    assert parse_warm([argv[argv.index("--warm") + 1]]) == EDGE_WARM
    assert "--warm" not in specs[f"worker-{names.BUILD_POOL}"].argv  # the build worker warms DEFAULT_WARM
    import pytest

    from opsflow.core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="module names"):
        parse_warm(["mlflow tracking"])


def test_opsflow_worker_start_takes_warm_from_its_arguments_else_the_environment():
    import argparse

    from opsflow.worker.cli import register, settings_from

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))

    def warm(argv, environ):
        return settings_from(parser.parse_args(["worker", "start", "--pool", "p", *argv]), environ).warm

    assert warm([], {}) == DEFAULT_WARM
    assert warm([], {"OPSFLOW_WORKER_WARM": "none"}) == ()
    assert warm(["--warm", "boto3", "--warm", "docker"], {"OPSFLOW_WORKER_WARM": "none"}) == ("boto3", "docker")


def test_a_zygote_whose_preloaded_code_changed_is_replaced_and_stopped_once_its_runs_end(tmp_path):
    import signal
    import socket
    import uuid

    from opsflow.worker.zygote import Zygotes

    code = tmp_path / "probe_code_of_test.py"
    code.write_text("VALUE = 1\n")
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers: a run's first request waits there
    env = {"PREFECT_API_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/api"}

    async def scenario():
        zygotes = Zygotes(lambda: Zygote(modules=["probe_code_of_test"], paths=[str(tmp_path)], env=env))
        zygotes.CHECK_EVERY_S = 0.0
        await zygotes.start()
        first = zygotes.current
        try:
            assert str(code) in first.ready["files"] and zygotes.refresh_if_changed() is None
            job = {"flow_run_id": str(uuid.uuid4()), "workdir": str(tmp_path), "stream_output": False}
            run = await first.spawn("a run that goes on", job)
            stat = code.stat()
            os.utime(code, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a git pull
            assert zygotes.refresh_if_changed() == str(code)
            replacing = zygotes.replacing
            assert zygotes.refresh_if_changed() is None  # one replacement at a time
            await asyncio.wait_for(replacing, 120)
            second = zygotes.current
            assert second is not first and second.pid != first.pid and zygotes.swapped.is_set()
            assert zygotes.retired == [first] and first._proc.poll() is None  # its run is still running
            assert zygotes.refresh_if_changed() is None  # the new one imported the current code
            os.kill(run.pid, signal.SIGKILL)
            assert await asyncio.wait_for(run.exited, 30) == -signal.SIGKILL
            await zygotes.retire_idle()
            assert zygotes.retired == [] and first._proc.poll() is not None and second.alive
            later = await second.spawn("a later run", {})
            assert await asyncio.wait_for(later.exited, 60) == 1  # forked from the new one (a job without a workdir)
        finally:
            await zygotes.stop()
            silent.close()

    asyncio.run(scenario())


def test_a_replacement_zygote_that_does_not_start_is_retried_after_a_while_not_every_second(tmp_path):
    from opsflow.core.errors import ZygoteError
    from opsflow.worker.zygote import Zygotes

    class Changed:
        pid, ready = 1, {}

        def changed_file(self):
            return "flows/x.py"

    class Broken:
        async def start(self):
            raise ZygoteError("the zygote exited with 1 while importing")

    async def scenario():
        zygotes = Zygotes(Broken)
        zygotes.current = Changed()
        zygotes.CHECK_EVERY_S = 0.0
        assert zygotes.refresh_if_changed() == "flows/x.py"
        await zygotes.replacing
        assert zygotes.current.__class__ is Changed and zygotes.replacing is None  # runs keep the old one
        assert zygotes.refresh_if_changed() is None  # not tried again at once
        zygotes._checked -= zygotes.RETRY_AFTER_FAILURE_S
        assert zygotes.refresh_if_changed() == "flows/x.py"  # a minute later it is
        await zygotes.replacing

    asyncio.run(scenario())
