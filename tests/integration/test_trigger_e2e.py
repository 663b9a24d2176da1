"""Git-triggered runs end to end: signed deliveries to the receiver run the GitOps flows on the vault-build worker.

Real stack (its vault-build worker), the deployments of `opsflow deploy`, the webhook receiver
as a subprocess, and the local forge emulator (no forge is reachable from here) both sending
the deliveries' counterpart and receiving the PR's status and comment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from opsflow.deploy import PROJECT_ROOT, deploy_all
from opsflow.samples import SHOP_SOURCE, SampleRepo, save_shop_blocks
from tests.support.deliveries import run_id_of
from tests.support.net import free_port

pytestmark = [pytest.mark.stack, pytest.mark.docker, pytest.mark.forge]

SECRET = "e2e-webhook-secret-51f3"
REPO = "acme/shop-e2e"
APP = "shop-e2e"


def _signed(event: str, payload: dict) -> tuple[dict, bytes]:
    body = json.dumps(payload).encode()
    return {"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}, body


def _pr_payload(action: str, number: int, head: str, merged: bool = False, merge_sha: str | None = None) -> dict:
    return {"action": action, "number": number, "repository": {"full_name": REPO},
            "pull_request": {"number": number, "state": "closed" if action == "closed" else "open", "merged": merged,
                             "merge_commit_sha": merge_sha, "head": {"sha": head, "ref": "feature/e2e"},
                             "base": {"ref": "main"}}}


@pytest.fixture(scope="module")
def shop(stack, tmp_path_factory):
    """The sample shop with a PR branch and its merge; its Application block is saved before the
    receiver starts (the receiver reloads applications on a miss at most every few seconds)."""
    repo = SampleRepo(tmp_path_factory.mktemp("shop-e2e"), SHOP_SOURCE)
    repo.commit("initial")
    head = repo.commit("a change", branch="feature/e2e")
    merge_sha = repo.merge("feature/e2e")
    save_shop_blocks(repo.url, name=APP, forge_repo=REPO)
    return head, merge_sha


@pytest.fixture(scope="module")
def receiver(stack, shop, forge_emulator, tmp_path_factory):
    deploy_all(stack.prefect_api_url, with_kubernetes=False, say=lambda line: None,
               only=["gitops-pr/default", "gitops-merge/default"])  # the two a delivery starts
    block = forge_emulator.block("github")
    block.webhook_secret = SECRET
    block.save("e2e-forge", overwrite=True)
    port = free_port()
    journal = tmp_path_factory.mktemp("webhook") / "deliveries.sqlite3"
    proc = subprocess.Popen([sys.executable, "-m", "opsflow.webhook", "serve", "--forge-block", "e2e-forge",
                             "--port", str(port), "--journal", str(journal)],
                            cwd=PROJECT_ROOT, env={**os.environ, "PREFECT_API_URL": stack.prefect_api_url})
    url = f"http://127.0.0.1:{port}/hooks/github"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except httpx.HTTPError:
            assert proc.poll() is None, "the receiver exited"
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _wait(run_id, deadline_s: float = 600):
    from prefect.client.orchestration import get_client

    end = time.monotonic() + deadline_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < end:
            run = client.read_flow_run(run_id)
            if run.state and run.state.is_final():
                return run
            time.sleep(0.5)
    raise AssertionError(f"flow run {run_id} did not finish in {deadline_s}s")


def test_a_pull_request_delivery_runs_the_pr_flow_on_the_worker_and_a_merge_delivery_the_merge_flow(
        stack, shop, receiver, forge_emulator):
    forge_emulator.reset()
    head, merge_sha = shop

    headers, body = _signed("pull_request", _pr_payload("opened", 3, head))
    answer = httpx.post(receiver, content=body, headers=headers, timeout=10)
    assert answer.status_code == 202, answer.text
    pr_run = _wait(run_id_of(answer, receiver, SECRET))
    assert pr_run.state.is_completed(), pr_run.state.message
    assert pr_run.work_pool_name == "vault-build" and pr_run.parameters["sha"] == head
    comments = forge_emulator.comments("github", REPO, 3)
    assert len(comments) == 1 and "gitops-pr-shop-e2e" in comments[0]["body"]
    assert [s["state"] for s in forge_emulator.statuses("github", REPO, head)] == ["pending", "success"]

    # The same delivery again (a redelivery) starts nothing new.
    again = httpx.post(receiver, content=body, headers=headers, timeout=10)
    assert again.status_code == 202 and run_id_of(again, receiver, SECRET) == str(pr_run.id)

    headers, body = _signed("pull_request", _pr_payload("closed", 3, head, merged=True, merge_sha=merge_sha))
    merged = httpx.post(receiver, content=body, headers=headers, timeout=10)
    assert merged.status_code == 202, merged.text
    merge_run = _wait(run_id_of(merged, receiver, SECRET))
    assert merge_run.state.is_completed(), merge_run.state.message
    assert merge_run.parameters["sha"] == merge_sha
    assert [s["state"] for s in forge_emulator.statuses("github", REPO, merge_sha)] == ["pending", "success"]

    # The push of that merge commit to main is the same merge: no second run.
    headers, body = _signed("push", {"ref": "refs/heads/main", "after": merge_sha, "before": head,
                                     "repository": {"full_name": REPO}, "deleted": False})
    push = httpx.post(receiver, content=body, headers=headers, timeout=10)
    assert push.status_code in (202, 204)
    if push.status_code == 202:
        assert run_id_of(push, receiver, SECRET) == str(merge_run.id)


@pytest.mark.parametrize("mutate, code", [
    (lambda h, b: ({**h, "X-Hub-Signature-256": "sha256=" + "0" * 64}, b), 401),
    (lambda h, b: ({k: v for k, v in h.items() if k != "X-Hub-Signature-256"}, b), 401),
])
def test_bad_signatures_start_nothing(stack, receiver, mutate, code):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        before = client.count_flow_runs()
    headers, body = mutate(*_signed("pull_request", _pr_payload("opened", 9, "c" * 40)))
    assert httpx.post(receiver, content=body, headers=headers, timeout=10).status_code == code
    with get_client(sync_client=True) as client:
        assert client.count_flow_runs() == before
