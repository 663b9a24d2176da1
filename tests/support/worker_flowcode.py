"""The flow the worker tests deploy. Copied into a temporary directory as ``flowcode.py`` and deployed from there
(``flow.from_source(<dir>, "flowcode.py:probe")``), so it is never in the worker's preload list.
"""

import ctypes
import json
import os
import signal
import time
from pathlib import Path

from prefect import flow, task
from prefect.runtime import flow_run


@task
def record(out_dir: str, how: str, sleep: float) -> dict:
    """Append what this run's process sees to ``<out_dir>/<flow run id>.jsonl``, then behave as ``how`` says."""
    info = {"cwd": os.getcwd(), "code": str(Path(__file__).resolve().parent), "pid": os.getpid(), "ppid": os.getppid(),
            "at": time.time(),
            "env": {k: v for k, v in os.environ.items() if k.startswith("OPSFLOW_PROBE_")}}
    if out_dir:
        with open(Path(out_dir) / f"{flow_run.id}.jsonl", "a") as fh:
            fh.write(json.dumps(info) + "\n")
    if sleep:
        time.sleep(sleep)
    if how == "raise":
        raise RuntimeError("the probe failed on purpose")
    if how == "exit":
        os._exit(3)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segv":
        ctypes.string_at(0)
    return info


@flow
def probe(out_dir: str = "", how: str = "ok", sleep: float = 0.0) -> dict:
    return record(out_dir, how, sleep)
