"""The pipelines as users run them: from the Prefect UI in a real (headless Chromium) browser.

Real stack (Prefect server + UI, its vault-build and edge workers, S3 stand-in, registry, dockerd),
the deployments of `opsflow deploy`, and the forge emulator receiving the PR's report. The test
fills the deployments' parameter forms, starts the runs with the UI's own buttons, follows them on
their run pages and reads the summary artifacts there; what the UI shows is checked against the
registry and the forge. Screenshots land in test-output/ui/.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from opsflow.deploy import deploy_all
from opsflow.samples import SHOP_SOURCE, SampleRepo, save_shop_blocks
from tests.support.gitops_harness import manifest_digest
from tests.support.net import free_port

pytestmark = [pytest.mark.stack, pytest.mark.docker, pytest.mark.forge, pytest.mark.browser]

FORGE_REPO = "acme/shop-ui"
PR = 12
IMAGE_REF = re.compile(r"(\S+/(\S+?))@(sha256:[0-9a-f]{64})")


@pytest.fixture(scope="module")
def deployments(stack):
    """The deployments of deployments/prefect.yaml these tests run, served by the stack's workers (`opsflow apply
    --only`, as after changing a few; test_deploy.py applies them all)."""
    return deploy_all(stack.prefect_api_url, with_kubernetes=False, say=lambda line: None,
                      only=["gitops-pr/default", "gitops-merge/default", "manual-deploy/edge-local"])


@pytest.fixture(scope="module")
def shop(stack, tmp_path_factory):
    """The sample shop under a name of its own (so its images are new to the registry), with a PR and its merge."""
    repo = SampleRepo(tmp_path_factory.mktemp("shop-ui"), SHOP_SOURCE)
    repo.commit("initial")
    head = repo.commit("a change from the UI test", branch="feature/ui")
    merge = repo.merge("feature/ui")
    app = f"shop-ui-{uuid.uuid4().hex[:6]}"
    save_shop_blocks(repo.url, name=app, forge_repo=FORGE_REPO)
    return app, head, merge


def test_a_user_runs_the_gitops_pipelines_from_the_ui_and_reads_the_pushed_digests(
        stack, deployments, shop, forge, ui):
    app, head, merge = shop
    forge_block = f"{app}-forge"
    forge.block("github").save(forge_block, overwrite=True)

    # Pull request: the deployment's form, as a user fills it.
    ui.open_deployment("gitops-pr", "default")
    ui.open_custom_run()
    assert ui.field_description("sha") == "the PR head commit to build (full SHA)."
    ui.fill("app", app)
    ui.fill("pr", PR)
    ui.fill("sha", head)
    ui.fill("forge_block", forge_block)
    ui.screenshot("gitops-pr-form")
    ui.submit_run()
    assert ui.wait_for_state() == "Completed", ui.body_text()
    assert ui.run_name() == f"gitops-pr-{app}-#{PR}-{head[:7]}"
    ui.screenshot("gitops-pr-run", full_page=False)
    names = ui.task_run_names()  # one task run per component and step, each named for what it did
    for step in ("build", "test", "save-artifact", "record-test-results"):
        assert {f"{step}-backend", f"{step}-frontend"} <= set(names), names
    assert "fetch-env-files" in names and f"clone-{head[:12]}" in names, names
    summary = ui.open_artifact(f"gitops-pr-{app}")
    shown = summary.text
    assert f"opsflow GitOps · {app} · PR #{PR}" in shown and head[:7] in shown
    for component, passed in (("backend", "10 passed"), ("frontend", "7 passed")):
        row = next(line for line in shown.splitlines() if line.startswith(component + " "))
        assert f"{app}/{component}/" in row and passed in row, row
    ui.screenshot("gitops-pr-artifact")
    [comment] = forge.comments("github", FORGE_REPO, PR)
    assert f"{app}/backend/" in comment["body"] and f"{app}/frontend/" in comment["body"]
    assert [s["state"] for s in forge.statuses("github", FORGE_REPO, head)] == ["pending", "success"]

    # Merge: the images are built from the PR's artifacts and pushed; the summary names their digests.
    ui.open_deployment("gitops-merge", "default")
    ui.open_custom_run()
    ui.fill("app", app)
    ui.fill("sha", merge)
    ui.fill("pr", PR)
    ui.screenshot("gitops-merge-form")
    ui.submit_run()
    assert ui.wait_for_state() == "Completed", ui.body_text()
    assert ui.run_name() == f"gitops-merge-{app}-{merge[:7]}"
    ui.screenshot("gitops-merge-run", full_page=False)
    names = ui.task_run_names()
    for component in ("backend", "frontend"):
        assert {f"build-image-{app}-{component}", f"push-image-{app}-{component}"} <= set(names), names
    summary = ui.open_artifact(f"gitops-merge-{app}")
    images = {name: (repository, digest) for repository, name, digest in IMAGE_REF.findall(summary.text)}
    assert set(images) == {f"{app}-backend", f"{app}-frontend"}, summary.text
    from blocks import ContainerRegistry

    registry = ContainerRegistry.load("local-registry")
    for repository, digest in images.values():
        assert repository.startswith(registry.host + "/")
        assert manifest_digest(registry, repository, merge) == digest
        assert manifest_digest(registry, repository, "main") == digest
    ui.scroll_tables_right(summary)
    ui.screenshot("gitops-merge-artifact")


@pytest.fixture
def edge_app(stack, docker_client):
    """A one-component app (busybox httpd on a free port) whose v1 image is in the registry; its
    containers on the edge engine and its deploy records are removed afterwards."""
    from blocks import Application, Component, ContainerRegistry, DockerHostTarget, HealthCheck, ObjectStore
    from tasks.images.base import prepare_busybox_context
    from tasks.images.build import build_image
    from tasks.images.push import push_image

    app, port = f"ui-dep-{uuid.uuid4().hex[:6]}", free_port()
    registry = ContainerRegistry.load("local-registry")
    context = prepare_busybox_context(
        dockerfile_tail=f'COPY www /www\nCMD ["/bin/busybox", "httpd", "-f", "-p", "{port}", "-h", "/www"]\n',
        files={"www/index.html": f"{app} v1\n", "www/healthz": "ok\n"})
    built = build_image(DockerHostTarget.load("edge-local"), context, registry.repository(f"{app}-web"),
                        tags=["v1"], revision="v1", source="tests/ui")
    pushed = push_image(DockerHostTarget.load("edge-local"), registry, built)
    Application(name=app, repository="file:///nowhere/ui-dep.git",
                components=[Component(name="web", ports=[port],
                                      health_check=HealthCheck(path="/healthz", deadline_s=30))]).save(app)
    store = ObjectStore.load("opsflow-artifacts")
    try:
        yield app, port, pushed.digest
    finally:
        for container in docker_client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"}):
            container.remove(force=True)
        client = store.get_client()
        for obj in client.list_objects_v2(Bucket=store.bucket).get("Contents", []):
            if f"/{app}/" in obj["Key"]:
                client.delete_object(Bucket=store.bucket, Key=obj["Key"])


def test_a_user_deploys_from_the_ui_and_approves_the_plan_by_resuming_the_run(stack, deployments, edge_app, ui):
    app, port, digest = edge_app

    ui.open_deployment("manual-deploy", "edge-local")
    ui.open_custom_run()
    ui.fill("app", app)
    ui.fill("version", "v1")
    ui.fill("approve", True)  # the target(s) keep the deployment's default: edge-local
    ui.screenshot("manual-deploy-form")
    run_id = ui.submit_run()
    assert ui.wait_for_state("paused", "failed", "crashed") == "Paused", ui.body_text()
    assert ui.run_name() == f"deploy-{app}-edge-local"
    ui.screenshot("manual-deploy-paused", full_page=False)
    with pytest.raises(httpx.HTTPError):  # nothing is deployed before the approval
        httpx.get(f"http://127.0.0.1:{port}/index.html", timeout=2)

    # The approver reads the plan (the artifact of the plan task), then resumes the run.
    ui.open_task_run("publish-deploy-plan-edge-local")
    plan = ui.open_artifact(f"deploy-plan-{app}-edge-local")
    assert f"{app}-web@{digest}" in plan.text and "edge-local" in plan.text
    ui.screenshot("manual-deploy-plan")
    ui.open(f"/runs/flow-run/{run_id}")
    assert ui.wait_for_state("paused") == "Paused"
    ui.resume_run()
    assert ui.wait_for_state() == "Completed", ui.body_text()
    ui.screenshot("manual-deploy-run", full_page=False)
    assert httpx.get(f"http://127.0.0.1:{port}/index.html", timeout=5).text == f"{app} v1\n"
