"""Installing and operating opsflow as a platform team does, on the session's real stack.

One edge node's life, end to end:

- the wheel (``uv build``) of an opsflow commit A, installed with the ``edge`` role into a fresh
  venv (from uv's cache, at the lock's versions), and that venv's worker started from a directory
  holding a user's own ``flows/`` and ``tasks/`` (which must not shadow the installed ones);
- ``opsflow apply`` run from the venv, outside any checkout (its prefect.yaml is package data),
  pinning ``manual-deploy/edge-local`` to a newer commit B with notifications to a
  ``custom-webhook`` block;
- deploys on that worker run B's code (cloned once into the worker's code cache, then reused),
  not the worker's own A; a failed deploy and a deploy held for approval reach a local HTTP
  receiver through Prefect's automations, with the run's name and link; ``opsflow runs watch``
  follows the failed run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support.net import free_port
from tests.support.paths import ROOT
from tests.support.web_app import push_web_app
from tests.support.workers import TAG, WorkerProcess, tagged_pids, wait_online

pytestmark = [pytest.mark.stack, pytest.mark.docker]

DEPLOYMENT = "manual-deploy/edge-local"
#: The change commit B makes, visible in every run of B's code: the run's name.
RUN_NAME_BEFORE = """return f"deploy-{params.get('app')}-\""""
RUN_NAME_AFTER = """return f"deploy-{params.get('app')}-at-b-\""""
EDGE_VENV_LIMIT_MB = 300
NOT_ON_EDGE = ("mlflow", "dvc", "sklearn", "matplotlib", "git", "kubernetes", "moto")


def _uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    assert Path(found).exists(), "uv is needed to build and install the wheel (make setup installs it)"
    return found


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "opsflow", "GIT_AUTHOR_EMAIL": "ops@example.test",
           "GIT_COMMITTER_NAME": "opsflow", "GIT_COMMITTER_EMAIL": "ops@example.test"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{argv[:3]} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _project_repo(path: Path) -> str:
    """This tree (tracked and new files, as they are now) as commit A of a repository at ``path``, and B on top."""
    path.mkdir()
    files = _git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, path / name)
    _git(path, "init", "-q", "-b", "main")
    _git(path, "add", "-A")
    _git(path, "commit", "-qm", "A: what the edge node installed")
    return _git(path, "rev-parse", "HEAD")


def _commit_b(repo: Path) -> str:
    flow_file = repo / "flows" / "manual_deploy.py"
    text = flow_file.read_text()
    assert RUN_NAME_BEFORE in text, "flows/manual_deploy.py's run name changed: update RUN_NAME_BEFORE"
    flow_file.write_text(text.replace(RUN_NAME_BEFORE, RUN_NAME_AFTER))
    _git(repo, "commit", "-qam", "B: applied later")
    return _git(repo, "rev-parse", "HEAD")


class Sink:
    """A local HTTP receiver for the notifications: records every POST body."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.arrived = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink.arrived:
                    sink.bodies.append(json.loads(body or b"{}"))
                    sink.arrived.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, needle: str, timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for body in self.bodies:
                    if needle in json.dumps(body):
                        return body
                left = deadline - time.monotonic()
                assert left > 0, f"no notification with {needle!r} within {timeout} s; got {self.bodies}"
                self.arrived.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait_final(client, run_id, *, timeout: float = 240, until=("COMPLETED", "FAILED", "CRASHED", "CANCELLED")):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state and run.state.type.value in until:
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} still {run.state.name if run.state else '?'} after {timeout} s")


def _logs(client, run_id) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    return "\n".join(entry.message for entry in client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200))


@pytest.fixture(scope="module")
def edge_node(stack, tmp_path_factory):
    """Commit A's wheel installed with the edge role in a fresh venv, its worker on a work pool of its own
    (a copy of ``edge``: the stack's edge worker serves every queue of ``edge``), started from a directory
    whose ``flows/`` and ``tasks/`` would fail any import; and commit B."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    base = tmp_path_factory.mktemp("install")
    repo = base / "opsflow.git"
    commit_a = _project_repo(repo)
    uv = _uv()
    _run([uv, "build", "--wheel", "--out-dir", str(base / "dist"), str(repo)])
    [wheel] = (base / "dist").glob("opsflow-*.whl")
    commit_b = _commit_b(repo)

    venv = base / "edge-venv"
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)])
    requirements = base / "edge-requirements.txt"
    _run([uv, "export", "--frozen", "--no-dev", "--extra", "edge", "--no-emit-project", "--no-hashes",
          "--output-file", str(requirements)], cwd=ROOT)
    install = [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")]
    if subprocess.run([*install, "--offline", "-r", str(requirements)], capture_output=True).returncode:
        _run([*install, "-r", str(requirements)])  # something was not in uv's cache yet
    _run([*install, "--no-deps", str(wheel)])

    shadow = base / "users-dir"  # a user's own project, where the worker happens to be started
    for package in ("flows", "tasks", "blocks"):
        (shadow / package).mkdir(parents=True)
        (shadow / package / "__init__.py").write_text(f'raise ImportError("the user\'s own {package} was imported")\n')

    pool = f"edge-install-{uuid.uuid4().hex[:6]}"
    tag = uuid.uuid4().hex
    log = base / "worker.log"
    env = {**os.environ, TAG: tag, "OPSFLOW_CODE_CACHE": str(base / "code-cache")}
    with get_client(sync_client=True) as client:
        edge = client.read_work_pool("edge")
        client.create_work_pool(WorkPoolCreate(name=pool, type=edge.type, base_job_template=edge.base_job_template))
        with open(log, "wb") as out:
            argv = [str(venv / "bin" / "opsflow"), "worker", "start", "--pool", pool, "--name", pool,
                    "--shutdown-timeout", "5"]
            proc = subprocess.Popen(argv,
                                    cwd=shadow, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        worker = WorkerProcess(proc, log, pool, tag)
        try:
            wait_online(client, pool, worker)
            yield {"venv": venv, "repo": repo, "a": commit_a, "b": commit_b, "pool": pool, "worker": worker,
                   "shadow": shadow, "cache": base / "code-cache", "client": client}
        finally:
            worker.stop()
            assert not tagged_pids(tag), "the edge worker left processes behind"
            for deployment in client.read_deployments():
                if deployment.work_pool_name == pool:
                    client.delete_deployment(deployment.id)
            client.delete_work_pool(pool)


@pytest.fixture(scope="module")
def sink():
    receiver = Sink()
    yield receiver
    receiver.close()


def test_edge_install_applies_and_runs_the_applied_commit_and_notifies(edge_node, sink, docker_client):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.states import Cancelling

    from blocks import ObjectStore
    from opsflow.notify import FAILED_NAME, HELD_NAME
    from tasks.deploy.records import record_key

    client, venv, a, b = edge_node["client"], edge_node["venv"], edge_node["a"], edge_node["b"]
    bin_dir = venv / "bin"

    # The edge role is lean and carries none of the build server's libraries.
    size_mb = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6
    assert size_mb <= EDGE_VENV_LIMIT_MB, f"the edge venv is {size_mb:.0f} MB"
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    assert _run([str(bin_dir / "python"), "-c", probe, *NOT_ON_EDGE]).stdout.strip() == "[]"
    version = _run([str(bin_dir / "opsflow"), "--version"], cwd=edge_node["shadow"]).stdout
    assert f"commit {a}" in version and "installed package" in version

    uid = uuid.uuid4().hex[:6]
    app, port = f"inst-{uid}", free_port()
    push_web_app(app, port, {"v1": True}, deadline_s=30, page_prefix="install ")
    block_name = f"opsflow-notify-{uid}"
    CustomWebhookNotificationBlock(name="opsflow tests", url=sink.url,
                                   json_data={"subject": "{{subject}}", "body": "{{body}}"}).save(block_name)
    before = client.read_deployment_by_name(DEPLOYMENT) if _exists(client, DEPLOYMENT) else None
    store = ObjectStore.load("opsflow-artifacts")
    try:
        # `opsflow apply` from the installed wheel, outside any checkout, pinned to commit B.
        applied = _run([str(bin_dir / "opsflow"), "apply", "--api-url", os.environ["PREFECT_API_URL"],
                        "--no-kubernetes", "--only", DEPLOYMENT, "--repository", str(edge_node["repo"]), "--commit", b,
                        "--notify-block", f"custom-webhook/{block_name}"], cwd=edge_node["shadow"])
        assert f"deployment {DEPLOYMENT}: applied at commit {b[:12]}" in applied.stdout, applied.stdout
        assert f"automation '{FAILED_NAME}' → custom-webhook/{block_name}" in applied.stdout
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        assert deployment.version == b[:12]
        [(step, inputs)] = [next(iter(s.items())) for s in deployment.pull_steps]
        assert step == "prefect.deployments.steps.git_clone"
        assert (inputs["repository"], inputs["commit_sha"]) == (str(edge_node["repo"]), b)

        # The same deployment on the test's own pool, so that only the installed worker runs it.
        twin = client.create_deployment(
            flow_id=deployment.flow_id, name=f"install-{uid}", version=deployment.version, tags=deployment.tags,
            entrypoint=deployment.entrypoint, pull_steps=deployment.pull_steps, parameters=deployment.parameters,
            parameter_openapi_schema=deployment.parameter_openapi_schema, work_pool_name=edge_node["pool"])

        def start(**parameters):
            return client.create_flow_run_from_deployment(twin, parameters={"app": app, **parameters}).id

        # The worker runs A; the deploy runs B (cloned into its cache) and the app serves.
        first = _wait_final(client, start(version="v1"))
        logs = _logs(client, first.id)
        assert first.state.type.value == "COMPLETED", f"{first.state}\n{logs}\n{edge_node['worker'].log_text()[-3000:]}"
        assert first.name == f"deploy-{app}-at-b-edge-local"
        assert f"cloning commit {b[:12]}" in logs and f"this worker runs {a[:12]}" in logs
        assert (edge_node["cache"] / b).is_dir()
        assert httpx.get(f"http://127.0.0.1:{port}/index.html", timeout=10).text.strip() == "install v1"
        assert "could not preload" not in edge_node["worker"].log_text()  # the user's flows/ shadowed nothing

        # A failed deploy: B's code again, from the cache; the notification has the run's name and link.
        failed = _wait_final(client, start(version="v9"))
        assert failed.state.type.value == "FAILED"
        assert f"commit {b[:12]} from the worker's cache" in _logs(client, failed.id)
        note = sink.wait_for(str(failed.id))
        assert failed.name in note["subject"] and failed.name in note["body"]
        assert f"/runs/flow-run/{failed.id}" in note["body"] and "v9 is not in the registry" in note["body"]
        assert "max_parallel" not in note["body"] and "records_store" not in note["body"]  # no parameters

        # `runs watch <flow>/<deployment>` follows that deployment's latest run: the failed one.
        watched = subprocess.run([str(bin_dir / "opsflow"), "runs", "watch", f"manual-deploy/install-{uid}"],
                                 capture_output=True, text=True, timeout=120, cwd=edge_node["shadow"])
        assert watched.returncode == 1, watched.stderr
        assert str(failed.id) in watched.stdout.splitlines()[0] and "● Failed" in watched.stdout
        assert "v9 is not in the registry" in watched.stdout

        # A deploy held for approval.
        held_id = start(version="v1", approve=True)
        held = _wait_final(client, held_id, until=("PAUSED", "FAILED", "CRASHED"))
        assert held.state.type.value == "PAUSED"
        note = sink.wait_for(f"/runs/flow-run/{held_id}")
        assert "waits for approval" in note["subject"] and held.name in note["body"]
        client.set_flow_run_state(held_id, Cancelling(), force=True)
        _wait_final(client, held_id, timeout=90)
    finally:
        for name in (FAILED_NAME, HELD_NAME):
            for automation in client.read_automations_by_name(name):
                client.delete_automation(automation.id)
        client.delete_block_document(client.read_block_document_by_name(block_name, "custom-webhook").id)
        if before is not None:  # leave it as it was (the session's other tests apply it again anyway)
            client.update_deployment(before.id, DeploymentUpdate(pull_steps=before.pull_steps, version=before.version))
        elif _exists(client, DEPLOYMENT):
            client.delete_deployment(client.read_deployment_by_name(DEPLOYMENT).id)
        for container in docker_client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"}):
            container.remove(force=True)
        store.get_client().delete_object(Bucket=store.bucket, Key=record_key(app, "edge-local"))


def _exists(client, name: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    try:
        client.read_deployment_by_name(name)
    except ObjectNotFound:
        return False
    return True
