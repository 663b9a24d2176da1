"""GitOps failure paths on the real stack: a failing test, a failing build, a missing artifact, bad input."""

from __future__ import annotations

import pytest

from flows.gitops_merge import gitops_merge
from flows.gitops_pr import gitops_pr
from opsflow.core.errors import ArtifactNotFound
from opsflow.samples import SHOP_SOURCE, SampleRepo, env_file_text, save_shop_blocks, shop_components
from tasks.artifacts.store import artifact_key
from tests.support.gitops_harness import run_artifacts, run_flow, run_logs, task_run_names, task_run_states

pytestmark = [pytest.mark.stack, pytest.mark.docker, pytest.mark.forge]

APP = "shop-fail"
FORGE_REPO = "acme/shop-fail"


@pytest.fixture(scope="module")
def shop(stack, forge_emulator, tmp_path_factory):
    """A backend-only shop whose repository the tests break in different ways; its tests run after the build."""
    repo = SampleRepo(tmp_path_factory.mktemp("shop-fail"), SHOP_SOURCE)
    repo.commit("initial")
    forge_emulator.block("gitea").save("gitops-fail-forge", overwrite=True)
    save_shop_blocks(repo.url, name=APP, forge_repo=FORGE_REPO, env_text=env_file_text(APP), components=("backend",),
                     test_after_build=True)  # the tests after the build: a failing build stops them
    return repo


@pytest.fixture
def fresh_forge(forge_emulator):
    forge_emulator.reset()
    return forge_emulator


def _objects(stack, prefix: str) -> list[str]:
    from blocks import ObjectStore

    store = ObjectStore.load("opsflow-artifacts")
    listing = store.get_client().list_objects_v2(Bucket=store.bucket, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def _key(shop: SampleRepo, sha: str) -> str:
    return artifact_key(APP, shop_components(("backend",), test_after_build=True)[0], shop.tree(sha, "backend"))


def test_a_failing_test_fails_the_run_names_the_test_and_blocks_the_merge(stack, shop, fresh_forge):
    tests = shop.read("backend/test/catalog.test.ts")
    shop.write("backend/test/catalog.test.ts", tests + """
describe("pricing", () => {
  it("deliberately broken price check", () => {
    assert.equal(1 + 1, 3);
  });
});
""")
    assert 'import assert from "node:assert' in tests and "describe, it" in tests, "adapt this test to the sample"
    sha = shop.commit("break a test", branch="broken-test")
    run = run_flow(gitops_pr, app=APP, pr=11, sha=sha, forge_block="gitops-fail-forge")
    assert not run.ok
    assert "deliberately broken price check" in str(run.result())
    comments = fresh_forge.comments("gitea", FORGE_REPO, 11)
    assert len(comments) == 1 and "deliberately broken price check" in comments[0]["body"]
    assert "Failed tests" in comments[0]["body"]
    assert fresh_forge.statuses("gitea", FORGE_REPO, sha)[-1]["state"] == "failure"
    # The build was fine, so its artifact is stored, with the failed tests recorded: a merge refuses it.
    assert f"{_key(shop, sha)}.json" in _objects(stack, _key(shop, sha))
    merged = run_flow(gitops_merge, app=APP, sha=sha, forge_block="gitops-fail-forge")
    assert not merged.ok and isinstance(merged.result(), ArtifactNotFound)
    assert "tests failed" in str(merged.result()) and "deliberately broken price check" in str(merged.result())


def test_a_failing_build_fails_before_anything_is_uploaded(stack, shop, fresh_forge):
    shop.write("backend/src/broken.ts", "export const total: number = 'not a number';\n")
    sha = shop.commit("type error", branch="broken-build")
    key = _key(shop, sha)
    run = run_flow(gitops_pr, app=APP, pr=12, sha=sha, forge_block="gitops-fail-forge")
    assert not run.ok
    assert "build of 'backend' failed" in str(run.result())
    assert "broken.ts" in str(run.result())  # the compiler's message reaches the user
    assert _objects(stack, key) == [] and _objects(stack, "tmp/") == []
    states = task_run_states(run.id)
    assert states.get("test-backend") in (None, "NotReady"), states  # the tests never ran
    assert states["build-backend"] == "Failed"
    comment = fresh_forge.comments("gitea", FORGE_REPO, 12)[0]["body"]
    assert "build of 'backend' failed" in comment
    assert fresh_forge.statuses("gitea", FORGE_REPO, sha)[-1]["state"] == "failure"
    shop.write("backend/src/broken.ts", "export const total: number = 0;\n")


def test_a_merge_without_a_pr_artifact_fails_naming_the_key(stack, shop, fresh_forge):
    shop.write("backend/src/never-built.ts", "export const neverBuilt = true;\n")
    sha = shop.commit("never went through a PR", branch="direct-push")
    run = run_flow(gitops_merge, app=APP, sha=sha, forge_block="gitops-fail-forge")
    assert not run.ok and isinstance(run.result(), ArtifactNotFound)
    assert _key(shop, sha) in str(run.result()) and "build_if_missing" in str(run.result())
    names = task_run_names(run.id)
    assert not [n for n in names if n.startswith(("build-", "push-image", "load-artifact"))], names
    assert fresh_forge.statuses("gitea", FORGE_REPO, sha)[-1]["state"] == "failure"


@pytest.mark.parametrize("flow, params", [
    (gitops_pr, {"app": APP, "pr": 1, "sha": "main; rm -rf /"}),
    (gitops_pr, {"app": "../etc", "pr": 1, "sha": "a" * 40}),
    (gitops_pr, {"app": APP, "pr": -3, "sha": "a" * 40}),
    (gitops_merge, {"app": APP, "sha": "a" * 40, "branch": "main; rm -rf /"}),
    (gitops_merge, {"app": APP, "sha": "a" * 40, "branch": "../../etc"}),
    (gitops_merge, {"app": APP, "sha": "a" * 40, "version": "1.0; reboot"}),
])
def test_bad_input_is_rejected_before_any_side_effect(stack, shop, fresh_forge, flow, params):
    run = run_flow(flow, forge_block="gitops-fail-forge", **params)
    assert not run.ok
    assert "validation" in (run.state.message or "").lower() or "invalid" in str(run.result()).lower()
    assert fresh_forge.requests == []  # not even a pending status
    assert task_run_names(run.id) == []


def test_a_forge_outage_at_the_final_report_keeps_the_good_build(stack, shop, fresh_forge, monkeypatch):
    """Regression: a forge outage at the final report failed an otherwise good build. As a CI service does,
    the build's result stands and the report is delivered once the forge answers again."""
    from opsflow.forge import api as forge_api
    from opsflow.samples import git

    monkeypatch.setattr(forge_api, "BACKOFF_S", 0.05)
    first = git("rev-list", "--max-parents=0", "HEAD", cwd=shop.work)
    git("checkout", "-q", "-B", "outage", first, cwd=shop.work)
    git("checkout", "-q", first, "--", ".", cwd=shop.work)
    sha = shop.commit("a good change while the forge is down", branch="outage")
    # The PR comment is written at the very end: its first attempt meets 503s on every client retry.
    fresh_forge.fail_next(4, 503, "/comments", method="GET")
    run = run_flow(gitops_pr, app=APP, pr=13, sha=sha, forge_block="gitops-fail-forge")
    assert run.ok, run.state.message
    statuses = fresh_forge.statuses("gitea", FORGE_REPO, sha)
    assert statuses[-1]["state"] == "success"
    assert len(fresh_forge.comments("gitea", FORGE_REPO, 13)) == 1
    assert task_run_states(run.id)["upsert-pr-comment-gitops-pr-shop-fail"] == "Completed"
    assert sum(r.method == "GET" and "/comments" in r.target for r in fresh_forge.requests) >= 5  # it was retried

    # The forge stays down past the reporting deadline (shortened here): the run keeps the build's result,
    # says in its log and its report artifact that the report was not delivered, and nothing else fails.
    from tasks.reporting import upsert_pr_comment

    monkeypatch.setattr(upsert_pr_comment, "retry_delay_seconds", [0.1] * len(upsert_pr_comment.retry_delay_seconds))
    fresh_forge.fail_next(1000, 503, "/comments", method="GET")
    again = run_flow(gitops_pr, app=APP, pr=13, sha=sha, forge_block="gitops-fail-forge")
    fresh_forge.reset()
    assert again.ok, again.state.message
    report = {a.key: a for a in run_artifacts(again.id)}["gitops-pr-shop-fail"].data
    assert "Not delivered to the forge" in report and "PR comment" in report
    assert "could not be delivered to the forge (the run's result stands)" in run_logs(again.id)


# The build waits for the tests to open the FIFO, the tests for the build: only side by side do both finish
# (one after the other, the build waits until its ``timeout`` and fails).
RENDEZVOUS = "mkfifo rendezvous 2>/dev/null; "
BESIDE_BUILD = ["timeout", "30", "sh", "-c", RENDEZVOUS + "read go < rendezvous && mkdir -p out && echo $go > out/x"]
BESIDE_TESTS = ["timeout", "30", "sh", "-c", RENDEZVOUS + "echo built > rendezvous && printf '%s' "
                "'<testsuites><testsuite name=\"beside\"><testcase name=\"ran beside the build\"/></testsuite>"
                "</testsuites>' > junit.xml"]


def test_tests_that_do_not_need_the_build_run_beside_it(stack, shop, fresh_forge):
    from blocks import Application, Component

    app = Application.load(APP)
    beside = Component(name="beside", path="beside", build_commands=[BESIDE_BUILD], build_output="out",
                       test_command=BESIDE_TESTS, test_after_build=False, junit_report="junit.xml",
                       base_image="opsflow:busybox")
    app.model_copy(update={"name": f"{APP}-beside", "components": [beside], "env_files": []}).save(f"{APP}-beside",
                                                                                                   overwrite=True)
    shop.write("beside/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /srv\n")
    sha = shop.commit("a component tested beside its build", branch="beside")
    run = run_flow(gitops_pr, app=f"{APP}-beside", pr=14, sha=sha, forge_block="gitops-fail-forge")
    assert run.ok, run.state.message
    assert task_run_states(run.id)["test-beside"] == "Completed"
    assert "1 passed" in fresh_forge.comments("gitea", FORGE_REPO, 14)[0]["body"]
    key = artifact_key(f"{APP}-beside", beside, shop.tree(sha, "beside"))
    assert f"{key}.json" in _objects(stack, key)
