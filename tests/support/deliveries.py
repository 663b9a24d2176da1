"""Signed deliveries as GitHub, Gitea and GitLab send them (the documented payload shapes)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid


def pr_payload(kind: str, action: str, number: int, head: str, repo: str, merged: bool = False,
               merge_sha: str | None = None, base: str = "main") -> dict:
    if kind == "gitlab":
        gl_action = {"opened": "open", "synchronize": "update", "reopened": "reopen"}.get(action, action)
        if action == "closed" and merged:
            gl_action = "merge"
        return {"object_kind": "merge_request", "project": {"path_with_namespace": repo},
                "object_attributes": {"action": gl_action, "iid": number, "last_commit": {"id": head},
                                      "merge_commit_sha": merge_sha, "target_branch": base}}
    return {"action": action, "number": number, "repository": {"full_name": repo},
            "pull_request": {"number": number, "merged": merged, "merge_commit_sha": merge_sha,
                             "head": {"sha": head, "ref": "feature/x"}, "base": {"ref": base}}}


def push_payload(kind: str, ref: str, after: str, repo: str) -> dict:
    if kind == "gitlab":
        return {"object_kind": "tag_push" if ref.startswith("refs/tags/") else "push", "ref": ref, "after": after,
                "checkout_sha": after, "project": {"path_with_namespace": repo}}
    return {"ref": ref, "after": after, "deleted": False, "repository": {"full_name": repo}}


def signed(kind: str, event: str, payload: dict | bytes, secret: str,
           delivery: str | None = None) -> tuple[dict, bytes]:
    """Headers (as the forge sends them) and body of one delivery."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    delivery = delivery or str(uuid.uuid4())
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if kind == "github":
        return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": f"sha256={mac}",
                "Content-Type": "application/json"}, body
    if kind == "gitea":
        return {"X-Gitea-Event": event, "X-Gitea-Delivery": delivery, "X-Gitea-Signature": mac,
                "Content-Type": "application/json"}, body
    gl_event = {"pull_request": "Merge Request Hook", "push": "Push Hook"}.get(event, event)
    return {"X-Gitlab-Event": gl_event, "X-Gitlab-Event-UUID": delivery, "X-Gitlab-Token": secret,
            "Content-Type": "application/json"}, body


def lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


def status_headers(secret: str, delivery: str) -> dict[str, str]:
    """The signature the receiver's delivery status endpoint asks for."""
    from opsflow.webhook.server import status_signature

    return {"X-Opsflow-Signature-256": status_signature(secret, delivery)}


def run_id_of(answer, receiver_url: str, secret: str, timeout_s: float = 60) -> str:
    """The flow run id of a 202 answer: in the answer, or (status 'queued': the run was still being
    created when the receiver answered) from the receiver's delivery status endpoint (signed with ``secret``)."""
    import time

    import httpx

    from opsflow.core.tls import default_context

    body = answer.json()
    if body.get("flow_run_id"):
        return body["flow_run_id"]
    assert body["status"] == "queued", body
    url = f"{receiver_url.rstrip('/')}/deliveries/{body['delivery']}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = httpx.get(url, timeout=5, headers=status_headers(secret, body["delivery"]),
                           verify=default_context()).json()
        if status.get("flow_run_id"):
            return status["flow_run_id"]
        time.sleep(0.1)
    raise AssertionError(f"delivery {body['delivery']} still has no run after {timeout_s}s: {status}")
