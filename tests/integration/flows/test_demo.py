"""`opsflow demo`: PR then merge of the sample shop, run as deployments on the vault-build worker;
then the MLOps part: PR, merge, worse PR on the ML sample."""

from __future__ import annotations

import contextlib
import io

import pytest

from opsflow.demo import run_all_demos, run_demo
from tests.support.gitops_harness import manifest_digest

pytestmark = [pytest.mark.stack, pytest.mark.docker]


@pytest.fixture(scope="module")
def both(stack):
    """What ``opsflow demo`` runs (run_all_demos): the GitOps demo, then the MLOps demo."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = run_all_demos(stack)
    return result, printed.getvalue()


@pytest.fixture(scope="module")
def demo(both):
    result, printed = both
    return result["gitops"], printed


def test_the_demo_goes_on_with_the_mlops_pipeline(stack, both):
    result, printed = both
    ml = result["mlops"]
    gitops_end, mlops_start = printed.index("Prefect UI:"), printed.index("MLOps PR #1")
    assert gitops_end < mlops_start
    assert ml["pr1"]["verdict"] in printed[mlops_start:] and "MLOps PR #2" in printed
    assert ml["pr2"]["verdict"] == "does not beat champion" and "does not beat champion" in ml["comments"][2][0]["body"]
    for pr in ("pr1", "pr2"):
        assert ml[pr]["url"].startswith(f"{stack.url(stack.mlflow_port)}/#/experiments/")
        assert f"MLflow run: {ml[pr]['url']}" in printed
    # the comment printed is the one on the forge emulation, posted once per PR
    assert len(ml["comments"][1]) == 1 and ml["comments"][1][0]["body"].splitlines()[1] in printed
    assert ml["statuses"][2][-1]["state"] == "failure" and "mlops/eval: failure" in printed
    version = ml["merge"]["version"]
    assert f"model ml-iris version {version} registered" in printed
    assert ml["pr1"]["verdict"] == "no champion yet" and ml["merge"]["champion"] is True
    assert f"champion -> v{version}, staging -> v{version}" in printed
    assert ml["aliases"] == {"champion": version, "staging": version}
    assert len(ml["predicted"]) == 5 and set(ml["predicted"]) <= {0, 1}  # the champion loads with pyfunc
    assert f"@champion').predict(first 5 rows of data/valid.csv) = {ml['predicted']}" in printed


def test_the_demo_prints_artifact_keys_image_refs_and_run_urls(stack, demo):
    result, printed = demo
    ui = stack.url(stack.prefect_port)
    assert f"{ui}/runs/flow-run/{result['pr']['id']}" in printed
    assert f"{ui}/runs/flow-run/{result['merge']['id']}" in printed
    for row in result["pr"]["rows"]:
        assert row["artifact_key"] in printed and row["tests_passed"] > 0 and row["tests_failed"] == 0
    for row in result["merge"]["rows"]:
        assert row["image_ref"] in printed


def test_the_demo_images_are_in_the_registry_under_the_printed_digests(stack, demo):
    result, _ = demo
    assert {r["component"] for r in result["merge"]["rows"]} == {"backend", "frontend"}
    from blocks import ContainerRegistry

    registry = ContainerRegistry.load("local-registry")
    for row in result["merge"]["rows"]:
        repository, digest = row["image_ref"].split("@")
        assert manifest_digest(registry, repository, digest) == digest
        assert manifest_digest(registry, repository, result["merge_sha"]) == digest
        assert manifest_digest(registry, repository, "main") == digest


def test_the_demo_runs_ran_on_the_vault_build_worker(stack, demo):
    from uuid import UUID

    from prefect.client.orchestration import get_client

    result, _ = demo
    with get_client(sync_client=True) as client:
        for step, name in (("pr", "gitops-pr-shop-#1-"), ("merge", "gitops-merge-shop-")):
            run = client.read_flow_run(UUID(result[step]["id"]))
            assert run.work_pool_name == "vault-build" and run.state.is_completed()
            assert run.name.startswith(name)


def test_a_second_demo_reuses_the_stored_artifacts(stack, demo):
    """The demo repository is made anew (new commits) from the same source: same trees, same artifacts."""
    first, _ = demo
    with contextlib.redirect_stdout(io.StringIO()):
        again = run_demo(stack)
    assert again["merge_sha"] != first["merge_sha"]
    assert all(r["artifact_reused"] for r in again["pr"]["rows"])
    assert [r["artifact_key"] for r in again["merge"]["rows"]] == [r["artifact_key"] for r in first["merge"]["rows"]]
    assert [r["artifact_digest"] for r in again["merge"]["rows"]] == \
        [r["artifact_digest"] for r in first["merge"]["rows"]]
