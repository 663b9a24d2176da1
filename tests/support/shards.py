"""Run the test suite as parallel shards, each a pytest session with a stack of its own.

``python -m tests.support.shards [pytest options]`` is what ``make test`` runs. Most of the suite's time is
spent waiting on real services (the Prefect server, Docker builds and pushes, a run going through a
worker), so one pytest process leaves a 2-core machine half idle; sessions side by side, each on its
own port base and state directory (``tests/conftest.py``: the suite already supports that), finish
sooner. The test files are split by their measured durations (``DURATIONS``, greedy, longest first) so
the shards end close together; a file never spans two shards (module fixtures stay shared). The files that use
MLflow share a shard, and the other shards' stacks run without MLflow.

``OPSFLOW_TEST_SHARDS`` sets how many (default ``SHARDS``; 1 runs plain pytest). Two on a 2-core machine. Three
were measured twice: in a checkout that had run the suite before (its stacks' engines keep their images), the
same commit took 8 min 46 s with three against 9 min 46 s with two; but in fresh clones, as CI runs it, three
took 12 min 37 s and 1,320 s of CPU, two 9 min 59 s and 914 s (each stack builds its images from nothing, and
the third stack's start competes with the others'). An earlier session found the same (875-914 s against
704-716 s). Test paths among the arguments run them in one plain session, as ``pytest`` would. Each shard's
output goes to ``test-output/shard-<n>.log`` and is printed when the shard ends; the exit code is the worst
shard's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from opsflow.stack.config import SERVICES

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
OUTPUT = ROOT / "test-output"
DEFAULT_BASE = 24000
SHARDS = 2
#: Seconds per test file (or the whole unit tree) without the session stack's start (each shard pays that once,
#: in its first test), from ``--durations=0`` in one fresh-clone run of the suite as two shards on a 2-core machine
#: (7031436; only their proportions matter); an unknown file counts as ``UNKNOWN_S``. They only balance the shards:
#: stale figures make a shard end later, nothing fails.
DURATIONS = {
    "tests/integration/flows/test_manual_deploy_edges.py": 74,
    "tests/integration/flows/test_mlops.py": 64,
    "tests/integration/worker/test_worker.py": 62,
    "tests/integration/ui/test_browser.py": 49,
    "tests/integration/webhook/test_receiver.py": 39,
    "tests/integration/flows/test_demo.py": 35,
    "tests/unit": 32,
    "tests/integration/flows/test_gitops_failures.py": 28,
    "tests/integration/stack/test_workers.py": 25,
    "tests/integration/flows/test_gitops.py": 23,
    "tests/integration/test_install.py": 22,
    "tests/integration/test_trigger_e2e.py": 20,
    "tests/integration/webhook/test_load.py": 19,
    "tests/integration/flows/test_manual_deploy.py": 18,
    "tests/integration/flows/test_gitops_secrets.py": 16,
    "tests/integration/stack/test_databases.py": 16,
    "tests/integration/test_deploy.py": 15,
    "tests/integration/flows/test_registry_cleanup.py": 15,
    "tests/integration/stack/test_full_stack.py": 10,
    "tests/integration/flows/test_manual_deploy_ssh.py": 8,
    "tests/integration/flows/test_mlops_dvclive.py": 8,
    "tests/integration/tasks/test_deploy_lock.py": 6,
    "tests/integration/flows/test_gitops_untrusted.py": 4,
    "tests/integration/stack/test_lifecycle.py": 4,
    "tests/integration/tasks/test_progress.py": 3,
    "tests/integration/test_settings_in_threads.py": 3,
    "tests/integration/flows/test_housekeeping.py": 3,
    "tests/integration/tasks/test_images.py": 3,
    "tests/integration/tasks/test_artifacts.py": 2,
    "tests/integration/flows/test_smoke.py": 1,
    "tests/integration/test_block_loading.py": 1,
    "tests/integration/registry/test_registry_auth.py": 1,
    "tests/integration/tasks/test_deploy_kubernetes.py": 1,
}
UNKNOWN_S = 5
#: The test files that use the MLflow server. They run in one shard; the other shards' stacks start without it
#: (``OPSFLOW_TEST_SERVICES``): MLflow takes ~20 s of CPU to start, while the other shard's stack starts too.
NEEDS_MLFLOW = (
    "tests/integration/flows/test_demo.py",
    "tests/integration/flows/test_mlops.py",
    "tests/integration/flows/test_mlops_dvclive.py",
    "tests/integration/stack/test_full_stack.py",
)


def units(root: Path = ROOT) -> list[str]:
    """The units a shard runs: the unit tree as one, and each integration test file."""
    files = sorted(str(p.relative_to(root)) for p in (root / "tests" / "integration").rglob("test_*.py"))
    return ["tests/unit", *files]


def split(units: list[str], shards: int, durations: dict[str, float] = DURATIONS,
          together: tuple[str, ...] = NEEDS_MLFLOW) -> list[list[str]]:
    """``units`` in ``shards`` groups of about equal measured time (longest first, each to the least loaded); the
    units of ``together`` all go to the first group."""
    groups: list[list[str]] = [[] for _ in range(shards)]
    loads = [0.0] * shards
    for unit in sorted(u for u in units if u in together):
        groups[0].append(unit)
        loads[0] += durations.get(unit, UNKNOWN_S)
    for unit in sorted((u for u in units if u not in together), key=lambda u: (-durations.get(u, UNKNOWN_S), u)):
        i = loads.index(min(loads))
        groups[i].append(unit)
        loads[i] += durations.get(unit, UNKNOWN_S)
    return [sorted(g) for g in groups if g]


def _names_tests(args: list[str]) -> bool:
    """True when an argument names a test path (``tests/...``, ``file::test``): then run just that."""
    return any(not a.startswith("-") and Path(a.split("::", 1)[0]).exists() for a in args)


def main(args: list[str]) -> int:
    shards = int(os.environ.get("OPSFLOW_TEST_SHARDS", str(SHARDS)))
    pytest = [sys.executable, "-m", "pytest"]
    if shards <= 1 or _names_tests(args):
        return subprocess.call([*pytest, *args], cwd=ROOT)
    base = int(os.environ.get("OPSFLOW_TEST_PORT_BASE", str(DEFAULT_BASE)))
    OUTPUT.mkdir(exist_ok=True)
    groups = split(units(), shards)
    running = []
    for n, group in enumerate(groups):
        log = OUTPUT / f"shard-{n}.log"
        env = {**os.environ, "OPSFLOW_TEST_PORT_BASE": str(base + 1000 * n)}
        if not set(group) & set(NEEDS_MLFLOW):
            env["OPSFLOW_TEST_SERVICES"] = ",".join(s for s in SERVICES if s != "mlflow")
        print(f"shard {n} (port base {base + 1000 * n}): {' '.join(group)}", flush=True)
        with open(log, "wb") as out:
            proc = subprocess.Popen([*pytest, *args, *group], cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        running.append((n, proc, log, time.monotonic()))
    worst = 0
    by_pid = {proc.pid: item for item in running for proc in [item[1]]}
    while by_pid:
        pid, status = os.wait()  # the next shard to end
        if pid not in by_pid:
            continue
        n, _proc, log, began = by_pid.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        print(f"\n{'=' * 30} shard {n}: exit {code} after {time.monotonic() - began:.0f}s {'=' * 30}", flush=True)
        sys.stdout.write(log.read_text(errors="replace"))
        sys.stdout.flush()
        worst = max(worst, code if code >= 0 else 1)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
