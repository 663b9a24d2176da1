"""Pull requests nobody vetted, on the real stack: a fork's PR is held (nothing cloned, no env file, nothing
stored; the status and the comment say so), the maintainer's label lets the same PR run for real, and an
application that chose ``run-without-secrets`` builds and tests it without env files, storing nothing.
(The receiver's side, a label delivery starting a run of its own: tests/integration/webhook/test_receiver.py.)"""

from __future__ import annotations

import json

import pytest

from flows.gitops_pr import gitops_pr
from opsflow.samples import SampleRepo
from tests.support.gitops_harness import run_artifacts, run_flow, run_logs, task_run_names

pytestmark = [pytest.mark.stack, pytest.mark.forge]

APP, FORGE_REPO, PR = "untrusted-it", "acme/untrusted", 21
BUILD_TOKEN = "untrusted-build-token-8c1d5e"
# The build records whether it found the env file (never its content) in the artifact.
BUILD = ["sh", "-c", "mkdir -p dist && cp index.html dist/ && "
         "if grep -q BUILD_TOKEN= .env 2>/dev/null; then echo present; else echo absent; fi > dist/env.txt && "
         "echo \"env file: $(cat dist/env.txt)\""]


def save_app(name: str, repository: str, forge_repo: str, **extra):
    from blocks import Application, Component, EnvFile

    app = Application(name=name, repository=repository, forge_repo=forge_repo,
                      components=[Component(name="web", path="web", build_commands=[BUILD])],
                      env_files=[EnvFile(secret_block=f"{APP}-web-env", path="web/.env")], **extra)
    app.save(name, overwrite=True)
    return app


@pytest.fixture(scope="module")
def fork_pr(stack, forge_emulator, tmp_path_factory):
    """A one-component app whose PR #21 comes from mallory's fork; mallory may not write to the repository."""
    from prefect.blocks.system import Secret

    repo = SampleRepo(tmp_path_factory.mktemp("untrusted"))
    repo.write("web/index.html", "hello\n")
    repo.write("web/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /www\n")  # stored with the artifact
    repo.commit("initial")
    repo.write("web/index.html", "hello from a fork\n")
    head = repo.commit("a change from outside", branch="fork-change")
    Secret(value=f"BUILD_TOKEN={BUILD_TOKEN}\n").save(f"{APP}-web-env", overwrite=True)
    save_app(APP, repo.url, FORGE_REPO)
    forge_emulator.block("github").save(f"{APP}-forge", overwrite=True)
    forge_emulator.add_pull_request("github", FORGE_REPO, PR, "mallory", head, fork_of="mallory/untrusted")
    return repo, head, forge_emulator


def _stored(prefix: str) -> list[str]:
    from blocks import ObjectStore

    store = ObjectStore.load("opsflow-artifacts")
    return [o["Key"] for o in store.get_client().list_objects_v2(Bucket=store.bucket, Prefix=prefix).get(
        "Contents", [])]


def test_a_fork_pr_is_held_then_the_maintainers_label_runs_it_for_real(fork_pr):
    _repo, head, forge = fork_pr
    held = run_flow(gitops_pr, app=APP, pr=PR, sha=head, forge_block=f"{APP}-forge")
    assert held.ok and held.result() == []
    names = task_run_names(held.id)
    assert "check-trust-#21" in names  # and no clone, no env file, no build, nothing stored:
    assert not [n for n in names if n.startswith(("clone-", "fetch-env", "build-", "test-", "save-artifact"))], names
    status = forge.statuses("github", FORGE_REPO, head)[-1]
    assert status["state"] == "pending" and status["description"].startswith("held until a maintainer adds")
    [comment] = forge.comments("github", FORGE_REPO, PR)
    assert "held:" in comment["body"] and "it comes from a fork" in comment["body"]
    assert "safe-to-test" in comment["body"]
    assert "mallory is not a collaborator" in comment["body"]
    assert _stored(f"{APP}/") == []

    forge.add_label("github", FORGE_REPO, PR, "safe-to-test")
    trusted = run_flow(gitops_pr, app=APP, pr=PR, sha=head, forge_block=f"{APP}-forge")
    assert trusted.ok, trusted.state.message
    names = task_run_names(trusted.id)
    assert "fetch-env-files" in names and "build-web" in names and "save-artifact-web" in names, names
    [row] = trusted.result()
    assert row["artifact_key"] and _stored(row["artifact_key"])
    assert forge.statuses("github", FORGE_REPO, head)[-1]["state"] == "success"
    [comment] = forge.comments("github", FORGE_REPO, PR)  # the same comment, now the report
    assert row["artifact_key"] in comment["body"] and "held" not in comment["body"]
    assert "env file: present" in run_logs(trusted.id)  # the real run had its env file
    texts = [run_logs(r.id) for r in (held, trusted)] + [json.dumps(a.data) for a in run_artifacts(trusted.id)]
    assert not [t for t in texts if BUILD_TOKEN in t]


def test_run_without_secrets_builds_and_tests_but_writes_no_env_file_and_stores_nothing(fork_pr):
    repo, head, forge = fork_pr
    other = f"{APP}-nosecrets"
    save_app(other, repo.url, f"{FORGE_REPO}-2", untrusted_prs="run-without-secrets")
    forge.add_pull_request("github", f"{FORGE_REPO}-2", PR, "mallory", head, fork_of="mallory/untrusted-2")
    run = run_flow(gitops_pr, app=other, pr=PR, sha=head, forge_block=f"{APP}-forge")
    assert run.ok, run.state.message
    names = task_run_names(run.id)
    assert "build-web" in names and "fetch-env-files" not in names and "save-artifact-web" not in names, names
    assert [r["artifact_key"] for r in run.result()] == [None]
    assert _stored(f"{other}/") == []
    assert "env file: absent" in run_logs(run.id)  # built without the env file
    assert forge.statuses("github", f"{FORGE_REPO}-2", head)[-1]["state"] == "success"
