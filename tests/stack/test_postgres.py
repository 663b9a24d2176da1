"""The Prefect server on a real PostgreSQL (Debian's), with the GitOps PR pipeline run against it.

The session's S3, registry and MLflow serve both servers; only Prefect is started again, on
PostgreSQL, through the stack (``database_url``, passed to the server in its environment).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from opsflow.samples import SHOP_SOURCE, SampleRepo
from tests.flows.gitops_harness import free_port
from tests.forge_emulator import forge_emulator_fixture  # noqa: F401

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]
BINDIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster of its own (scram-sha-256, password only in a 0600 file and env)."""
    if not BINDIRS:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bindir = BINDIRS[-1]
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="opsflow-pg-"))
    password = secrets.token_hex(16)
    (root / "pw").write_text(password + "\n")
    (root / "pw").chmod(0o600)
    if as_postgres:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    port = free_port()
    env = {**os.environ, "PGPASSWORD": password}
    subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(root / "data"), "-U", "opsflow",
                    "--auth=scram-sha-256", f"--pwfile={root / 'pw'}"], check=True, capture_output=True, timeout=120)
    server = subprocess.Popen([*as_postgres, str(bindir / "postgres"), "-D", str(root / "data"), "-p", str(port),
                               "-k", str(root), "-c", "listen_addresses=127.0.0.1"],
                              stdout=open(root / "log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline and server.poll() is None, (root / "log").read_text()[-2000:]
            time.sleep(0.3)
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "opsflow", "prefect"],
                       env=env, check=True, capture_output=True, timeout=60)
        yield {"url": f"postgresql+asyncpg://opsflow:{password}@127.0.0.1:{port}/prefect", "port": port,
               "bindir": bindir, "env": env, "password": password}
    finally:
        server.terminate()
        server.wait(60)
        shutil.rmtree(root, ignore_errors=True)


def test_the_gitops_pr_pipeline_runs_on_a_postgres_backed_server(stack, postgres, forge_emulator, tmp_path):
    from opsflow.stack import Stack, StackConfig, processes

    cfg = StackConfig(home=tmp_path / "pg-stack", prefect_port=free_port(), s3_port=stack.s3_port,
                      registry_port=stack.registry_port, mlflow_port=stack.mlflow_port, services=("prefect",),
                      database_url=postgres["url"])
    platform = Stack(cfg, say=lambda line: print(f"[pg-stack] {line}"))
    repo = SampleRepo(tmp_path / "shop", SHOP_SOURCE)
    repo.commit("initial")
    repo.write("backend/src/motd.txt", f"postgres {uuid.uuid4().hex}\n")  # a new tree: the pipeline builds it
    sha = repo.commit("a pull request", branch="feature/pg")
    forge_emulator.reset()
    try:
        platform.up()
        argv = [sys.executable, str(Path(__file__).with_name("pg_gitops_run.py")), json.dumps(
            {"forge_url": forge_emulator.url_for("github"), "repo_url": repo.url, "sha": sha,
             "forge_repo": "acme/pg-shop"})]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, env={
            **os.environ, "PREFECT_API_URL": cfg.prefect_api_url, "PREFECT_HOME": str(tmp_path / "client"),
            "FORGE_TOKEN": forge_emulator.token, "PYTHONPATH": str(ROOT)})
        line = next((x for x in done.stdout.splitlines() if x.startswith("OUTCOME ")), None)
        assert line, done.stdout[-3000:] + done.stderr[-3000:]
        outcome = json.loads(line.removeprefix("OUTCOME "))
        assert outcome["state"] == "COMPLETED", outcome
        run = httpx.get(f"{cfg.prefect_api_url}/flow_runs/{outcome['run_id']}", timeout=10).json()
        assert run["state"]["type"] == "COMPLETED" and run["name"].startswith("gitops-pr-shop-pg-#1-")
        # The run is a row of PostgreSQL's flow_run table, and the PR got its report.
        rows = subprocess.run([str(postgres["bindir"] / "psql"), "-h", "127.0.0.1", "-p", str(postgres["port"]),
                               "-U", "opsflow", "-d", "prefect", "-tAc",
                               f"select state_type from flow_run where id = '{outcome['run_id']}'"],
                              env=postgres["env"], capture_output=True, text=True, check=True, timeout=60)
        assert rows.stdout.strip() == "COMPLETED"
        assert [s["state"] for s in forge_emulator.statuses("github", "acme/pg-shop", sha)] == ["pending", "success"]
        assert postgres["password"] not in " ".join(" ".join(p) for p in _argvs())  # never a process argument
    finally:
        platform.down()
        assert not processes.marked_pids(cfg.home)


def _argvs() -> list[list[str]]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            found.append((entry / "cmdline").read_bytes().decode(errors="replace").split("\0"))
        except OSError:
            continue
    return found
