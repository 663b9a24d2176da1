"""Helper threads keep the caller's Prefect settings: the MLOps demo points Prefect at the stack with
``temporary_settings`` (a context variable), not the environment. A log line or an API call from a
bare thread would see no API URL, and Prefect would start a temporary server of its own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.paths import ROOT

pytestmark = [pytest.mark.stack]

SCRIPT = """
import os
import sys
from prefect import flow, get_run_logger, task
from prefect.settings import PREFECT_API_URL, temporary_settings
from opsflow.core.proc import run
from tasks.progress import StepProgress

@task
def step():
    with StepProgress("copy", total=1, every_s=0.1) as progress:
        run([sys.executable, "-c", "import time; print('line from the command'); time.sleep(0.5)"],
            cwd=".", logger=get_run_logger())
        progress.advance()

@flow
def check():
    step()

with temporary_settings({PREFECT_API_URL: sys.argv[1], "api.auth_string": os.environ["TEST_AUTH"]}):
    check()
print("DONE")
"""


def test_command_output_and_progress_go_to_the_callers_server(stack):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PYTHONPATH=str(ROOT), PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="true",
               TEST_AUTH=stack.api_auth_string())  # the server's credential, in settings too, never in argv
    done = subprocess.run([sys.executable, "-c", SCRIPT, stack.prefect_api_url], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "DONE" in out, out[-3000:]
    assert "line from the command" in out
    assert "temporary server" not in out, out[-3000:]
