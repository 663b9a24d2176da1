"""`opsflow apply`: pools, one edge queue per edge node, every deployment of prefect.yaml, idempotently."""

from __future__ import annotations

import subprocess

import pytest

from opsflow.deploy import PROJECT_ROOT, CodeSource, applied_at, code_source, declared_deployments, deploy_all

pytestmark = pytest.mark.stack


def test_deploy_creates_pools_queues_and_versioned_deployments_idempotently(stack):
    from prefect.client.orchestration import get_client

    said: list[str] = []
    names = deploy_all(stack.prefect_api_url, say=said.append)
    assert {"gitops-pr/default", "gitops-merge/default", "smoke-image/default", "smoke-image/edge-local",
            "registry-cleanup/nightly", "housekeeping/nightly", "manual-deploy/edge-local"} <= set(names)
    assert "work pool kubernetes (kubernetes): created" in said or "work pool kubernetes (kubernetes): exists" in said
    sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    with get_client(sync_client=True) as client:
        pr = client.read_deployment_by_name("gitops-pr/default")
        assert pr.version == sha and pr.work_pool_name == "vault-build"
        # every worker pulls exactly the applied commit (this checkout's HEAD)
        [clone] = [step["prefect.deployments.steps.git_clone"] for step in pr.pull_steps]
        assert clone["commit_sha"].startswith(sha) and len(clone["commit_sha"]) == 40 and clone["repository"]
        schema = pr.parameter_openapi_schema["properties"]
        assert schema["sha"]["pattern"] and schema["sha"]["description"]
        edge = client.read_deployment_by_name("smoke-image/edge-local")
        assert (edge.work_pool_name, edge.work_queue_name) == ("edge", "edge-local")
        assert client.read_work_queue_by_name("edge-local", work_pool_name="edge")
        assert client.read_work_pool("kubernetes").type == "kubernetes"
        cleanup = client.read_deployment_by_name("registry-cleanup/nightly")
        assert cleanup.parameters["apply"] is False  # an ad-hoc run from the UI is a dry run
        [nightly] = cleanup.schedules
        assert nightly.schedule.cron == "30 3 * * *" and nightly.active and nightly.parameters == {"apply": True}
        before = {(d.flow_id, d.name): d.id for d in client.read_deployments()}
    again: list[str] = []
    assert deploy_all(stack.prefect_api_url, say=again.append) == names
    assert "edge queue edge-local: exists" in again
    with get_client(sync_client=True) as client:
        assert {(d.flow_id, d.name): d.id for d in client.read_deployments()} == before
    # The demo's re-run: nothing is applied again when every declared deployment is at this commit.
    assert len(declared_deployments()) >= 9 and "default" in declared_deployments()
    source = code_source()
    if not source.dirty:  # CI's checkout; a dirty one is never taken as applied
        assert applied_at(source)
        skipped: list[str] = []
        assert deploy_all(stack.prefect_api_url, say=skipped.append, unless_applied=True) == names
        assert f"deployments: already applied at commit {source.version}" in skipped
    other = CodeSource(source.repository, "0" * 40)
    assert not applied_at(other)
    assert not applied_at(CodeSource(source.repository, source.commit, dirty=True))


def test_the_nightly_schedules_put_runs_on_the_calendar(stack):
    """The server's scheduler creates the cron runs (it failed on SQLAlchemy 2.1: nothing was ever scheduled)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterState

    deploy_all(stack.prefect_api_url, with_kubernetes=False, say=lambda line: None, only=["registry-cleanup/nightly"])
    with get_client(sync_client=True) as client:
        cleanup = client.read_deployment_by_name("registry-cleanup/nightly")
        deadline, runs = time.monotonic() + 120, []
        while not runs and time.monotonic() < deadline:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[cleanup.id])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type={"any_": ["SCHEDULED"]})))
            time.sleep(1)
    assert runs, "no scheduled run of registry-cleanup/nightly: is the server's scheduler failing? (see its log)"
    assert {(r.expected_start_time.hour, r.expected_start_time.minute) for r in runs} == {(3, 30)}
    assert all(r.parameters == {"registry_block": "local-registry", "policy_block": "nightly", "apply": True}
               for r in runs)
