"""The pools' job template (opsflow/core/pools.py): found through opsflow's own entry point, without importing
every Prefect collection installed beside it."""

from __future__ import annotations

import subprocess
import sys

from tests.support.paths import ROOT

PROBE = """
import sys
from opsflow.core.pools import job_template, worker_class_of
template = job_template()
assert set(template["variables"]["properties"]) >= {"env", "working_dir_root", "run_timeout"}, template
other = sorted(m for m in ("prefect_aws", "prefect_docker", "prefect_kubernetes") if m in sys.modules)
print("other collections imported:", other)
from prefect.workers.process import ProcessWorker
assert worker_class_of("process") is ProcessWorker  # a type no entry point is named after: Prefect's lookup
assert worker_class_of("no-such-type") is None
"""


def test_the_opsflow_template_loads_only_opsflows_collection():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "other collections imported: []" in done.stdout
