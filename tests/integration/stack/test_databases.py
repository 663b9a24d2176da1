"""The Prefect server on both of its databases: PostgreSQL (`opsflow stack up`'s default, a private cluster
of Debian's binaries under the stack home) and SQLite (`--database sqlite`).

The session stack runs on one of them (tests/conftest.py: PostgreSQL unless
OPSFLOW_TEST_DATABASE=sqlite); here a second Prefect server is started through the stack on the
other one, sharing the session's S3, registry and MLflow, and the GitOps PR pipeline runs on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from opsflow.core.prefect_api import basic_auth_header
from opsflow.samples import SHOP_SOURCE, SampleRepo
from tests.support.net import free_port
from tests.support.paths import ROOT, SUPPORT

pytestmark = pytest.mark.stack


def _argvs() -> list[list[str]]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            found.append((entry / "cmdline").read_bytes().decode(errors="replace").split("\0"))
        except OSError:
            continue
    return found


def test_the_session_stack_keeps_its_postgres_password_out_of_process_arguments(stack, stack_database):
    if stack_database is None:
        pytest.skip("the session stack runs on SQLite (OPSFLOW_TEST_DATABASE=sqlite)")
    # The server's pools are rows in the stack's own PostgreSQL, whose password is in no process's arguments.
    assert int(stack_database.psql("select count(*) from work_pool where name in ('vault-build', 'edge')")) == 2
    # The stack's own cluster: in its home, or where <home>/postgres links to when the home is out of the postgres
    # user's reach (a checkout in a 0700 directory).
    assert stack_database.data.resolve() == (stack.home / "postgres" / "data").resolve()
    assert oct(stack_database.password_file.stat().st_mode & 0o777) == "0o600"
    assert stack_database.password() not in " ".join(" ".join(p) for p in _argvs())


@pytest.fixture
def other_database(stack, stack_database):
    """The database the session stack does not use: ``postgres`` or ``sqlite``."""
    if stack_database is not None:
        return "sqlite"
    from opsflow.stack.postgres import find_bindir

    if find_bindir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    return "postgres"


def test_the_gitops_pr_pipeline_runs_on_a_server_backed_by_the_other_database(stack, other_database, forge_emulator,
                                                                             tmp_path):
    from opsflow.stack import Stack, StackConfig, processes
    from opsflow.stack.postgres import remove_cluster
    from opsflow.stack.services import cluster

    kind = other_database
    cfg = StackConfig(home=tmp_path / f"{kind}-stack", prefect_port=free_port(), s3_port=stack.s3_port,
                      registry_port=stack.registry_port, mlflow_port=stack.mlflow_port, postgres_port=free_port(),
                      services=("postgres", "prefect"), database=kind)
    pg = cluster(cfg) if kind == "postgres" else None
    platform = Stack(cfg, say=lambda line: print(f"[{kind}-stack] {line}"))
    repo = SampleRepo(tmp_path / "shop", SHOP_SOURCE)
    repo.commit("initial")
    # A new tree: the pipeline builds it. One component (the frontend) is enough to show every kind of the
    # server's rows (runs, task runs, states, artifacts, logs) on that database; the backend's two TypeScript
    # compilations would add half a minute of a shared 2-core machine and nothing the server sees differently.
    repo.write("frontend/src/motd.txt", f"{kind} {uuid.uuid4().hex}\n")
    sha = repo.commit("a pull request", branch=f"feature/{kind}")
    forge_emulator.reset()
    forge_repo = f"acme/{kind}-shop"
    try:
        platform.up()
        argv = [sys.executable, str(SUPPORT / "gitops_run.py"), json.dumps(
            {"forge_url": forge_emulator.url_for("github"), "repo_url": repo.url, "sha": sha,
             "forge_repo": forge_repo, "app": f"shop-{kind}", "components": ["frontend"]})]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, env={
            **os.environ, **cfg.client_env(), "PREFECT_HOME": str(tmp_path / "client"),
            "FORGE_TOKEN": forge_emulator.token, "PYTHONPATH": str(ROOT)})
        line = next((x for x in done.stdout.splitlines() if x.startswith("OUTCOME ")), None)
        assert line, done.stdout[-3000:] + done.stderr[-3000:]
        outcome = json.loads(line.removeprefix("OUTCOME "))
        assert outcome["state"] == "COMPLETED", outcome
        run = httpx.get(f"{cfg.prefect_api_url}/flow_runs/{outcome['run_id']}", timeout=10,
                        headers=basic_auth_header(cfg.api_auth_string())).json()
        assert run["state"]["type"] == "COMPLETED" and run["name"].startswith(f"gitops-pr-shop-{kind}-#1-")
        # The run is a row of that database's flow_run table, and the PR got its report.
        if pg:
            run_id = str(uuid.UUID(outcome["run_id"]))  # a UUID: nothing else reaches the query
            assert pg.psql(f"select state_type from flow_run where id = '{run_id}'") == "COMPLETED"  # noqa: S608 - a parsed UUID
            assert pg.password() not in " ".join(" ".join(p) for p in _argvs())  # never a process argument
        else:
            with contextlib.closing(sqlite3.connect(cfg.home / "prefect" / "prefect.db")) as db:
                row = db.execute("select state_type from flow_run where id = ?", (outcome["run_id"],)).fetchone()
            assert row == ("COMPLETED",)
        assert [s["state"] for s in forge_emulator.statuses("github", forge_repo, sha)] == ["pending", "success"]
    finally:
        platform.down()
        assert not processes.marked_pids(cfg.home)
        remove_cluster(cfg.home)  # tmp_path is closed to the postgres user: its cluster is in /var/lib/opsflow
