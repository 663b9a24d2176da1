"""A real zygote imports the libraries runs use once it is ready, serves a run asked for meanwhile first, skips
what is not installed, and stays single-threaded (forking from it stays safe) with all of them imported."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

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


def test_a_library_that_starts_a_thread_is_named():
    async def scenario():
        zygote = Zygote(modules=[], paths=[], warm=["boto3", "mlflow.tracking"])
        await zygote.start(timeout=120)
        try:
            deadline = time.monotonic() + 180
            while not zygote.warmed and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            return dict(zygote.warmed)
        finally:
            await zygote.stop()

    warmed = asyncio.run(scenario())
    assert list(warmed["threads"]) == ["mlflow.tracking"] and warmed["threads"]["mlflow.tracking"] > 1


def test_warm_settings():
    assert WorkerSettings().warm == DEFAULT_WARM
    assert WorkerSettings.from_env({"OPSFLOW_WORKER_WARM": "none"}).warm == ()
    assert WorkerSettings.from_env({"OPSFLOW_WORKER_WARM": "boto3, docker"}).warm == ("boto3", "docker")
    assert parse_warm(["boto3,docker", "kubernetes.dynamic"]) == EDGE_WARM
    import pytest

    from opsflow.core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="module names"):
        parse_warm(["mlflow tracking"])
    assert Path(__file__).exists()
