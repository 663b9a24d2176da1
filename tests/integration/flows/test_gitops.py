"""GitOps end to end on the sample shop app: PR → artifact + tests + comment; merge → that artifact as an image.

Real stack: Prefect server, S3 (moto stand-in unless minio is on PATH), registry, Docker engine;
the forge is the local emulator of the GitHub API (no forge is reachable from here).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time

import httpx
import pytest

from flows.gitops_merge import gitops_merge
from flows.gitops_pr import gitops_pr
from opsflow.samples import SHOP_SOURCE, SampleRepo, env_file_text, save_shop_blocks
from opsflow.stack.forge_emulator import TOKEN
from tests.support.gitops_harness import (
    ProcessWatch,
    manifest_digest,
    run_artifacts,
    run_flow,
    run_logs,
    task_run_names,
    wait_http,
)
from tests.support.net import free_port

pytestmark = [pytest.mark.stack, pytest.mark.docker, pytest.mark.forge]

APP = "shop-it"
FORGE_REPO = "acme/shop"
PR = 7
BUILD_TOKEN = "bt-5e1f0c9a7d2b4e38a6f1"
# Release tags do not move once pushed, and the session registry's storage outlives a session: one version per run.
VERSION, RELEASE = f"1.0.{int(time.time())}", f"1.1.{int(time.time())}"


@pytest.fixture(scope="module")
def pipeline(stack, forge_emulator, tmp_path_factory):
    """PR run, a second PR run of the same SHA, the merge run and its re-run, all watched."""
    forge_emulator.reset()
    repo = SampleRepo(tmp_path_factory.mktemp("shop"), SHOP_SOURCE)
    repo.commit("initial")
    repo.write("backend/src/motd.txt", "pull request change\n")
    head = repo.commit("a pull request", branch="feature/motd")
    merge_sha = repo.merge("feature/motd")
    forge_emulator.block("github").save("gitops-forge", overwrite=True)
    save_shop_blocks(repo.url, name=APP, forge_repo=FORGE_REPO,
                     env_text=env_file_text("shop-it", BUILD_TOKEN))
    common = {"app": APP, "forge_block": "gitops-forge"}
    with ProcessWatch() as watch:
        runs = {
            "pr": run_flow(gitops_pr, pr=PR, sha=head, **common),
            "pr_again": run_flow(gitops_pr, pr=PR, sha=head, **common),
            "merge": run_flow(gitops_merge, sha=merge_sha, branch="main", pr=PR, version=VERSION, **common),
            "merge_again": run_flow(gitops_merge, sha=merge_sha, branch="main", pr=PR, **common),
            "release": run_flow(gitops_merge, sha=merge_sha, branch="main", pr=PR, version=RELEASE, **common),
        }
    for name, run in runs.items():
        assert run.ok, f"{name}: {run.state.message} {run.result()!r}"
    return {"repo": repo, "head": head, "merge_sha": merge_sha, "runs": runs, "argv": watch.seen,
            "forge": forge_emulator}


def _s3(stack):
    from blocks import ObjectStore

    store = ObjectStore.load("opsflow-artifacts")
    return store, store.get_client()


def test_pr_run_stores_one_tested_artifact_per_component(stack, pipeline):
    rows = pipeline["runs"]["pr"].result()
    assert [r["component"] for r in rows] == ["backend", "frontend"]
    store, s3 = _s3(stack)
    for row in rows:
        meta = json.loads(s3.get_object(Bucket=store.bucket, Key=f"{row['artifact_key']}.json")["Body"].read())
        assert meta["commit"] == pipeline["head"] and meta["app"] == APP and meta["component"] == row["component"]
        assert meta["tree"] == pipeline["repo"].tree(pipeline["head"], row["component"])
        archive = s3.get_object(Bucket=store.bucket, Key=f"{row['artifact_key']}.tar.gz")["Body"].read()
        assert meta["digest"] == "sha256:" + hashlib.sha256(archive).hexdigest() == row["artifact_digest"]
        assert meta["size"] == len(archive)
        assert meta["tests"]["passed"] >= 4 and meta["tests"]["failed"] == 0
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            names = tar.getnames()
        assert "Dockerfile" in names and ("build-info.json" in names or "index.html" in names)
        assert not any(n.endswith(".env") or n.startswith("node_modules") for n in names)
    leftovers = s3.list_objects_v2(Bucket=store.bucket, Prefix="tmp/").get("KeyCount", 0)
    assert leftovers == 0


def test_the_run_carries_a_summary_and_the_test_tables(pipeline):
    artifacts = {a.key: a for a in run_artifacts(pipeline["runs"]["pr"].id)}
    assert {"gitops-pr-shop-it", "tests-backend", "tests-frontend"} <= set(artifacts)
    summary = artifacts["gitops-pr-shop-it"].data
    assert "backend" in summary and "frontend" in summary and "passed" in summary
    table = artifacts["tests-backend"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert rows and all(r["outcome"] == "passed" for r in rows)


def test_a_second_pr_run_reuses_the_artifacts_and_builds_nothing(pipeline):
    first, again = pipeline["runs"]["pr"], pipeline["runs"]["pr_again"]
    assert task_run_names(first.id).count("build-backend") == 1
    names = task_run_names(again.id)
    assert not [n for n in names if n.startswith(("build-", "test-", "save-artifact"))], names
    assert [r["artifact_key"] for r in again.result()] == [r["artifact_key"] for r in first.result()]
    assert all(r["artifact_reused"] for r in again.result())


def test_one_pr_comment_updated_in_place_and_statuses_link_the_runs(stack, pipeline):
    forge = pipeline["forge"]
    marker = "<!-- opsflow:gitops-pr-shop-it -->"
    comments = [c for c in forge.comments("github", FORGE_REPO, PR) if marker in c["body"]]
    assert len(comments) == 1, comments
    body = comments[0]["body"]
    for row in pipeline["runs"]["pr_again"].result():
        assert row["artifact_key"] in body
    assert "(reused)" in body and "passed" in body
    assert str(pipeline["runs"]["pr_again"].id) in body  # the link to the latest run
    edits = [r for r in forge.requests if r.method == "PATCH" and r.path.endswith(f"/comments/{comments[0]['id']}")]
    assert len(edits) == 1  # created by the first run, edited by the second
    statuses = forge.statuses("github", FORGE_REPO, pipeline["head"])
    pr_statuses = [s for s in statuses if s["context"] == "opsflow/gitops-pr"]
    assert [s["state"] for s in pr_statuses] == ["pending", "success", "pending", "success"]
    assert pr_statuses[1]["target_url"] == f"{stack.url(stack.prefect_port)}/runs/flow-run/{pipeline['runs']['pr'].id}"
    merge_statuses = forge.statuses("github", FORGE_REPO, pipeline["merge_sha"])
    assert [s["state"] for s in merge_statuses][:2] == ["pending", "success"]
    merge_comment = [c for c in forge.comments("github", FORGE_REPO, PR) if "gitops-merge-shop-it" in c["body"]]
    assert len(merge_comment) == 1 and "@sha256:" in merge_comment[0]["body"]


def test_the_merge_loaded_the_pr_artifact_and_ran_no_build(pipeline):
    merge = pipeline["runs"]["merge"]
    names = task_run_names(merge.id)
    assert not [n for n in names if n.startswith(("build-backend", "build-frontend", "test-", "save-artifact"))], names
    assert sum(n.startswith("load-artifact") for n in names) == 2
    assert "npm" not in run_logs(merge.id)
    pr_rows = {r["component"]: r for r in pipeline["runs"]["pr"].result()}
    for row in merge.result():
        assert row["artifact_key"] == pr_rows[row["component"]]["artifact_key"]




def test_images_are_in_the_registry_under_the_reported_digests_with_all_tags(stack, pipeline):
    from blocks import ContainerRegistry

    registry = ContainerRegistry.load("local-registry")  # TLS from the stack's CA, htpasswd login
    merge_sha = pipeline["merge_sha"]
    pr_rows = {r["component"]: r for r in pipeline["runs"]["pr"].result()}
    for row in pipeline["runs"]["merge"].result():
        repository, digest = row["image_ref"].split("@")
        assert set(row["image_tags"]) == {merge_sha, "main", VERSION}
        for ref in (digest, merge_sha, "main", VERSION):
            assert manifest_digest(registry, repository, ref) == digest
        assert pr_rows[row["component"]]["artifact_digest"]


def test_a_merge_rerun_pushes_nothing_new(pipeline):
    first = {r["component"]: r["image_ref"] for r in pipeline["runs"]["merge"].result()}
    again = {r["component"]: r["image_ref"] for r in pipeline["runs"]["merge_again"].result()}
    assert first == again
    assert not [n for n in task_run_names(pipeline["runs"]["merge_again"].id) if n.startswith("push-image")]


def test_a_release_tag_on_an_already_pushed_commit_is_added_without_a_build(stack, pipeline):
    """Regression: gitops-merge(sha, version=...) skipped everything once the SHA tag existed."""
    from blocks import ContainerRegistry

    registry = ContainerRegistry.load("local-registry")
    first = {r["component"]: r for r in pipeline["runs"]["merge"].result()}
    for row in pipeline["runs"]["release"].result():
        assert row["image_ref"] == first[row["component"]]["image_ref"] and row["tags_added"] == [RELEASE]
        repository, digest = row["image_ref"].split("@")
        assert manifest_digest(registry, repository, RELEASE) == digest
    names = task_run_names(pipeline["runs"]["release"].id)
    assert not [n for n in names if n.startswith(("push-image", "build-image", "load-artifact"))], names
    comment = [c for c in pipeline["forge"].comments("github", FORGE_REPO, PR) if "gitops-merge-shop-it" in c["body"]]
    assert f"added `{RELEASE}`" in comment[0]["body"]


def test_the_merge_reports_each_components_time(pipeline):
    """Regression: the merge comment's time column showed 0.0 s."""
    assert all(row["seconds"] > 0 for row in pipeline["runs"]["merge"].result())


def test_the_pushed_images_run_and_serve(stack, pipeline, docker_client):
    from blocks import ContainerRegistry

    login = ContainerRegistry.load("local-registry").auth_config()
    refs = {r["component"]: r["image_ref"] for r in pipeline["runs"]["merge"].result()}
    pr_rows = {r["component"]: r for r in pipeline["runs"]["pr"].result()}
    containers = []
    try:
        for comp, ref in refs.items():
            docker_client.images.remove(ref, force=True)
            image = docker_client.images.pull(ref, auth_config=login)
            assert image.labels["org.opencontainers.image.revision"] == pipeline["merge_sha"]
            assert image.labels["dev.opsflow.artifact.digest"] == pr_rows[comp]["artifact_digest"]
        port_b, port_f = free_port(), free_port()
        containers.append(docker_client.containers.run(refs["backend"], detach=True, network_mode="host",
                                                       environment={"PORT": str(port_b), "APP_VERSION": "1.0.0"}))
        containers.append(docker_client.containers.run(
            refs["frontend"], ["/bin/busybox", "httpd", "-f", "-p", str(port_f), "-h", "/www"], detach=True,
            network_mode="host"))
        health = wait_http(f"http://127.0.0.1:{port_b}/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        products = httpx.get(f"http://127.0.0.1:{port_b}/api/products", timeout=5).json()
        assert products
        page = wait_http(f"http://127.0.0.1:{port_f}/index.html")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert httpx.get(f"http://127.0.0.1:{port_f}/Dockerfile", timeout=5).status_code == 404
        config = httpx.get(f"http://127.0.0.1:{port_f}/config.json", timeout=5)
        assert config.status_code == 200 and "shop-it" in config.text and BUILD_TOKEN not in config.text
    finally:
        for container in containers:
            container.remove(force=True)


def test_no_secret_in_logs_artifacts_comments_statuses_or_process_arguments(stack, pipeline):
    secrets = [BUILD_TOKEN, TOKEN]
    texts = []
    for run in pipeline["runs"].values():
        texts.append(run_logs(run.id))
        texts += [json.dumps(a.data) + (a.description or "") for a in run_artifacts(run.id)]
    forge = pipeline["forge"]
    texts += [json.dumps(c) for c in forge.comments("github", FORGE_REPO, PR)]
    texts += [json.dumps(s) for sha in (pipeline["head"], pipeline["merge_sha"])
              for s in forge.statuses("github", FORGE_REPO, sha)]
    store, s3 = _s3(stack)
    for row in pipeline["runs"]["pr"].result():
        texts.append(s3.get_object(Bucket=store.bucket, Key=f"{row['artifact_key']}.json")["Body"].read().decode())
        archive = s3.get_object(Bucket=store.bucket, Key=f"{row['artifact_key']}.tar.gz")["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            texts += [tar.extractfile(m).read().decode(errors="replace") for m in tar.getmembers() if m.isfile()]
    texts += sorted(pipeline["argv"])
    assert any("git" in t and "fetch" in t for t in pipeline["argv"])  # the watch did see the run's commands
    for secret in secrets:
        leaks = [t[:200] for t in texts if secret in t]
        assert not leaks, f"a secret leaked: {leaks}"
    # The env files did reach the build: the public value is baked in, the build saw the token.
    assert any("shop-it" in t for t in texts)


def test_a_merge_pushes_to_a_token_auth_registry_whose_ca_the_engine_then_trusts(pipeline, token_registry,
                                                                                docker_client):
    """The same merge to the registry behind the Docker token flow (on this machine's address, so the engine
    verifies its certificate): opsflow installs the block's CA for the engine, pushes with the block's login,
    and the image pulls back by digest."""
    from blocks import ContainerRegistry
    from tasks.images.push import certs_dir

    registry = ContainerRegistry.load("token-registry")
    run = run_flow(gitops_merge, app=APP, sha=pipeline["merge_sha"], branch="main", registry_block="token-registry")
    assert run.ok, f"{run.state.message} {run.result()!r}"
    assert (certs_dir() / registry.host / "ca.crt").read_text() == registry.ca_cert
    for row in run.result():
        repository, digest = row["image_ref"].split("@")
        assert repository.startswith(f"{registry.host}/") and set(row["image_tags"]) == {pipeline["merge_sha"], "main"}
        assert manifest_digest(registry, repository, pipeline["merge_sha"]) == digest
        docker_client.images.remove(row["image_ref"], force=True)
        pulled = docker_client.images.pull(row["image_ref"], auth_config=registry.auth_config())
        assert pulled.labels["org.opencontainers.image.revision"] == pipeline["merge_sha"]
