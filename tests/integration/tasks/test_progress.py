"""StepProgress against the session's Prefect server: what the run page shows during a long step
(without a server: tests/unit/tasks/test_progress.py)."""

from __future__ import annotations

import time

import pytest
from prefect import flow, task

from tasks.progress import StepProgress
from tests.support.gitops_harness import run_artifacts, run_flow, run_logs

pytestmark = [pytest.mark.stack]


@pytest.fixture(autouse=True)
def _run_logger_off():
    """The run logger stays on here (tests/integration/tasks turns it off for ``.fn()`` calls): the logs are checked."""
    yield


@task(task_run_name="counted-step")
def counted_step(items: int, measured: bool) -> None:
    if measured:
        started = time.monotonic()
        with StepProgress("download", total=10, unit="MB", every_s=0.1,
                          measure=lambda: min(10.0, (time.monotonic() - started) * 10)):
            time.sleep(0.8)
        return
    with StepProgress("apply", total=items, unit="calls", every_s=0.1) as progress:
        for _ in range(items):
            time.sleep(0.1)
            progress.advance()


@flow(name="progress-check")
def progress_check(items: int = 8, measured: bool = False) -> None:
    counted_step(items, measured)


@pytest.mark.parametrize("measured", [False, True], ids=["counted", "measured"])
def test_a_long_step_reports_progress_while_it_runs_and_ends_at_100(stack, measured):
    run = run_flow(progress_check, items=8, measured=measured)
    assert run.ok, run.state
    [artifact] = [a for a in run_artifacts(run.id) if a.type == "progress"]
    assert float(artifact.data) == 100.0
    what = "download" if measured else "apply"
    lines = [line for line in run_logs(run.id).splitlines() if line.startswith(f"{what}: ")]
    # a line on the ticks while it ran (not only the final one), and the last one says all is done
    assert len(lines) >= 3, lines
    assert lines[-1] == (f"{what}: 10.0 of 10.0 MB (100%)" if measured else f"{what}: 8 of 8 calls (100%)"), lines
    percents = [float(line.rsplit("(", 1)[1].rstrip("%)")) for line in lines]
    assert percents == sorted(percents) and 0 < percents[0] < 100, lines
