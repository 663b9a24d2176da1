"""A hostile pull request through the GitOps pipelines, then a grep for the planted secrets in every store.

The repository is ``samples/notes-api`` (a Node backend with a runtime dependency and its own stock
Dockerfile, ``FROM node:20-alpine``: the test engine has opsflow's node base under that name). Its
pull request changes the build to print its env file as ``sh`` sources it (a value with a trailing
comment, a multi-line value), dump its environment, read every ``/proc/<pid>/environ`` it can see and
call ``$PREFECT_API_URL/block_documents/filter`` with ``include_secrets``; a second head adds a
top-level ``node:test`` case that fails with the token and the certificate's inner line in its message.
The good head is built, tested and merged in-process; the failing head runs on the stack's
vault-build worker, its dependencies restored from the build server's cache the first run filled.

Then the secrets (env file values, the forge token, the object store's key, the database password)
are searched in Prefect's logs, state messages, events and artifacts, the forge emulator's requests,
comments and statuses, the S3 bucket, the pushed image's layers, every process's argv sampled during
the runs, the stack's log files (the worker's included) and the files left on disk: 0 hits.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from blocks import DockerHostTarget, EnvFile, ObjectStore
from flows.gitops_merge import gitops_merge
from flows.gitops_pr import gitops_pr
from opsflow.samples import NOTES_SOURCE, SampleRepo, notes_component, save_app_block
from opsflow.stack.forge_emulator import TOKEN
from tests.support.gitops_harness import (
    ProcessWatch,
    Run,
    events_since,
    files_under,
    leaks,
    run_artifacts,
    run_flow,
    run_logs,
    run_state_messages,
    wait_http,
)
from tests.support.net import free_port

pytestmark = [pytest.mark.stack, pytest.mark.docker, pytest.mark.forge]

APP = "notes-sec"
FORGE_REPO = "acme/notes-sec"
FORGE_BLOCK = "notes-sec-forge"
BUILD_TOKEN = "bt-7c1d9e2f4a6b8c0d"
CERT_LINE = "cert-inner-line-3e5f7a9b1c"
ENV_TEXT = f"""BUILD_TOKEN={BUILD_TOKEN} # the token the build needs
PUBLIC_API_NAME={APP}
CERT="-----BEGIN CERT-----
{CERT_LINE}
-----END CERT-----"
"""
PROBE = """#!/bin/sh
set -a; . ./.env; set +a
echo "token from the env file: $BUILD_TOKEN"
printf 'cert: %s\\n' "$CERT"
echo "name=$PUBLIC_API_NAME"
echo "--- environment ---"; env | sort
echo "--- other processes ---"
for p in /proc/[0-9]*; do tr '\\0' '\\n' < "$p/environ" 2>/dev/null; done \
  | grep -E '^(PREFECT_|AWS_|OPSFLOW_(HOME|STACK|DATABASE))' | sed 's/^/found: /' || true
cat "$HOME/.prefect/profiles.toml" 2>/dev/null | sed 's/^/profile: /' || true
if [ -n "$PREFECT_API_URL" ]; then
  node -e "fetch(process.env.PREFECT_API_URL + '/block_documents/filter', {method: 'POST',
    headers: {'content-type': 'application/json'}, body: JSON.stringify({include_secrets: true})})
    .then(r => r.text()).then(t => console.log('API ANSWERED ' + t))"
else
  echo "no PREFECT_API_URL"
fi
"""
LEAKY_TEST = """import test from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

test("leaks the env file in its failure message", () => {
  const env = readFileSync(".env", "utf8");
  const token = /BUILD_TOKEN=(\\S+)/.exec(env)![1];
  assert.fail(`unexpected ${token} and ${env.split("\\n")[3]}`);
});
"""


@pytest.fixture(scope="module")
def hostile(stack, stack_database, docker_client, forge_emulator, tmp_path_factory):
    from prefect import flow
    from prefect.blocks.system import Secret
    from prefect.deployments import run_deployment
    from prefect.flow_runs import wait_for_flow_run
    from prefect.logging import disable_run_logger
    from prefect.utilities.asyncutils import run_coro_as_sync

    from opsflow.core.paths import PROJECT_ROOT
    from tasks.build.caches import default_root
    from tasks.images.base import ensure_base_image

    started = datetime.now(UTC)
    clock = time.monotonic()
    with disable_run_logger():
        base = ensure_base_image.fn(DockerHostTarget.load("build-server"), "node")
    docker_client.images.get(base).tag("node", "20-alpine")  # the stock-looking FROM of the sample

    repo = SampleRepo(tmp_path_factory.mktemp("notes-sec"), NOTES_SOURCE)
    repo.commit("initial")
    package = json.loads(repo.read("package.json"))
    package["scripts"]["build"] = "sh scripts/probe.sh && " + package["scripts"]["build"]
    repo.write("package.json", json.dumps(package, indent=2) + "\n")
    repo.write("scripts/probe.sh", PROBE)
    good = repo.commit("build: print what the build can see", branch="feature/probe")
    merge_sha = repo.merge("feature/probe")
    repo.write("test/unit/leak.test.ts", LEAKY_TEST)
    bad = repo.commit("a test that prints the env file", branch="feature/leaky-test")

    forge_emulator.block("github").save(FORGE_BLOCK, overwrite=True)
    Secret(value=ENV_TEXT).save(f"{APP}-env", overwrite=True)
    save_app_block(repo.url, APP, [notes_component()], forge_repo=FORGE_REPO,
                   env_files=[EnvFile(secret_block=f"{APP}-env", path=".env")])
    common = {"app": APP, "forge_block": FORGE_BLOCK}
    # The worker and this process share the build server's cache (the default $OPSFLOW_CACHE_DIR).
    assert "OPSFLOW_CACHE_DIR" not in os.environ
    with ProcessWatch() as watch:
        runs = {"good": run_flow(gitops_pr, pr=21, sha=good, **common),
                "merge": run_flow(gitops_merge, sha=merge_sha, pr=21, **common)}
        print(f"in-process runs: {time.monotonic() - clock:.1f}s")
        # A deployment of this checkout's gitops-pr on the vault-build pool (as `opsflow deploy` makes, in 0.5 s).
        flow.from_source(source=str(PROJECT_ROOT), entrypoint="flows/gitops_pr.py:gitops_pr").deploy(
            name="secrets-test", work_pool_name="vault-build", build=False, push=False, print_next_steps=False)
        print(f"+ deployed: {time.monotonic() - clock:.1f}s")
        created = run_deployment("gitops-pr/secrets-test", parameters={"pr": 22, "sha": bad, **common}, timeout=0)
        bad = run_coro_as_sync(wait_for_flow_run(created.id, timeout=600))  # its end heard as an event, no polling
        runs["bad"] = Run(state=bad.state, seconds=0.0)
    print(f"+ the run on the worker: {time.monotonic() - clock:.1f}s")
    return {"runs": runs, "started": started, "argv": watch.seen, "cache": default_root(),
            "good": good, "bad": bad, "merge_sha": merge_sha, "forge": forge_emulator}


def _secrets(stack_database) -> list[str]:
    store = ObjectStore.load("opsflow-artifacts")
    planted = [BUILD_TOKEN, CERT_LINE, TOKEN, store.secret_access_key.get_secret_value()]
    if stack_database is not None:  # the Prefect server's PostgreSQL password (opsflow.stack.postgres.Cluster)
        planted.append(stack_database.password())
    return planted


def test_the_build_saw_its_env_file_but_none_of_the_platform(hostile):
    good = hostile["runs"]["good"]
    assert good.ok, good.state.message
    logs = run_logs(good.id)
    assert "token from the env file: ***" in logs  # the env file reached the build, masked in the log
    assert "cert: ***" in logs  # the inner line of the multi-line value
    assert f"name={APP}" in logs  # a public value (and the app's name) is not masked
    assert "no PREFECT_API_URL" in logs and "API ANSWERED" not in logs
    assert "found: " not in logs and "profile: " not in logs  # no process's environment, no Prefect profile
    dump = logs.split("--- environment ---", 1)[1].split("--- other processes ---", 1)[0]
    assert "HOME=" in dump and "CI=true" in dump
    assert not [line for line in dump.splitlines()
                if "PREFECT" in line or "DOCKER_" in line or ("OPSFLOW_" in line and "OPSFLOW_COMMIT=" not in line)]


def test_the_run_on_the_worker_restored_its_dependencies_from_the_cache(hostile):
    bad = hostile["runs"]["bad"]
    logs = run_logs(bad.id)
    assert "restored node_modules from the npm cache" in logs
    assert "restored node_modules from the npm-runtime cache" in logs
    assert not bad.ok and "leaks the env file in its failure message" in (bad.state.message or "")


def test_the_failing_top_level_test_is_counted_and_its_message_masked(hostile):
    bad = hostile["runs"]["bad"]
    table = {a.key: a for a in run_artifacts(bad.id)}["tests-api"].data
    rows = json.loads(table) if isinstance(table, str) else table
    failed = [r for r in rows if r["outcome"] == "failed"]
    assert [r["test"] for r in failed] == ["leaks the env file in its failure message"]
    assert "***" in failed[0]["message"]
    assert len(rows) == 4  # the 3 top-level unit cases and the leaky one (`&&`: the API suite did not run)
    comment = hostile["forge"].comments("github", FORGE_REPO, 22)[0]["body"]
    assert "1 failed" in comment and "leaks the env file" in comment


def test_the_merged_image_runs_with_its_runtime_dependency(hostile, docker_client):
    merge = hostile["runs"]["merge"]
    assert merge.ok, merge.state.message
    [row] = merge.result()
    assert row["seconds"] > 0
    port = free_port()
    container = docker_client.containers.run(row["image_ref"], detach=True, network_mode="host",
                                             environment={"PORT": str(port)})
    try:
        assert wait_http(f"http://127.0.0.1:{port}/healthz").status_code == 200
        note = httpx.post(f"http://127.0.0.1:{port}/notes", json={"text": "ship it in 2h"}, timeout=5).json()
        assert note["reminder"] == "in 2 hours"  # `ms`, installed into the artifact, works in the image
        listing = container.exec_run(["ls", "/app/node_modules"]).output.decode()
        assert "ms" in listing and "typescript" not in listing
    finally:
        container.remove(force=True)


def test_no_planted_secret_in_any_store(stack, stack_database, hostile, docker_client):
    from prefect.client.orchestration import get_client

    secrets = _secrets(stack_database)
    runs = [r.id for r in hostile["runs"].values()]
    with get_client(sync_client=True) as client:
        bad = client.read_flow_run(hostile["runs"]["bad"].id)
        assert bad.state.is_failed() and bad.work_pool_name == "vault-build"  # it ran on the worker
    texts: dict[str, str | bytes] = {}
    for run_id in runs:
        texts[f"logs of {run_id}"] = run_logs(run_id)
        texts[f"states of {run_id}"] = "\n".join(run_state_messages(run_id))
        for artifact in run_artifacts(run_id):
            texts[f"artifact {artifact.key} of {run_id}"] = json.dumps(artifact.data) + (artifact.description or "")
    events = events_since(hostile["started"], wait_for="prefect.flow-run.Failed")
    assert any(e["event"] == "prefect.task-run.Failed" for e in events)
    texts["events"] = json.dumps(events)
    forge = hostile["forge"]
    texts["forge requests"] = json.dumps([{"target": r.target, "body": r.body, "headers": {
        k: v for k, v in r.headers.items() if k.lower() != "authorization"}} for r in forge.requests], default=str)
    store = ObjectStore.load("opsflow-artifacts")
    s3 = store.get_client()
    for obj in s3.list_objects_v2(Bucket=store.bucket, Prefix=f"{APP}/").get("Contents", []):
        body = s3.get_object(Bucket=store.bucket, Key=obj["Key"])["Body"].read()
        texts[f"s3 {obj['Key']}"] = body if obj["Key"].endswith(".json") else _gunzip(body)
    image = docker_client.images.get(hostile["runs"]["merge"].result()[0]["image_ref"])
    texts["image layers"] = b"".join(image.save())
    texts["process arguments"] = "\n".join(sorted(hostile["argv"]))
    for log in (stack.home / "logs").glob("*.log"):
        texts[f"stack log {log.name}"] = log.read_bytes()
    _wait_for_deleters()
    tmp = Path(tempfile.gettempdir())
    left = [p for pattern in ("opsflow-run-*", "opsflow-artifact-*", "opsflow-trash-*", "opsflow-pack-*",
                              "opsflow-buildkit-*", "opsflow-dockerfile-*", "opsflow-ctx-*")
            for p in files_under(tmp, pattern)]
    used = [m.parent for m in (hostile["cache"] / "trees").glob("*/*/used")
            if m.stat().st_mtime >= hostile["started"].timestamp()]  # the cache entries these runs saved or used
    assert used, "the runs used the dependency cache"
    cached = [p for entry in used for p in files_under(entry)]
    for path in [*left, *cached]:
        with contextlib.suppress(FileNotFoundError):  # another session's run may remove its own files meanwhile
            texts[f"file {path}"] = path.read_bytes()
    assert not [p for p in tmp.glob("opsflow-run-*") if _owner(p) == os.getpid()]  # every exit path cleaned up
    assert texts["logs of " + str(hostile["runs"]["good"].id)], "the grep read the run's logs"
    assert any("git" in a and "fetch" in a for a in hostile["argv"])  # the watch saw the runs' commands
    found = leaks(texts, secrets)
    assert not found, f"planted secrets found: {found}"


def _gunzip(data: bytes) -> bytes:
    import gzip

    return gzip.decompress(data)


def _wait_for_deleters(deadline_s: float = 60) -> None:
    """Workspaces are deleted by processes of their own: wait until none is left in the temp dir."""
    end = time.monotonic() + deadline_s
    tmp = Path(tempfile.gettempdir())
    while any(tmp.glob("opsflow-trash-*")) and time.monotonic() < end:
        time.sleep(0.2)


def _owner(workspace: Path) -> int | None:
    try:
        return int((workspace / ".opsflow-owner").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
