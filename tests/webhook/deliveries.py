"""Signed deliveries as GitHub, Gitea and GitLab send them (the documented payload shapes)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

KINDS = ("github", "gitea", "gitlab")
EVENT_HEADER = {"github": "X-GitHub-Event", "gitea": "X-Gitea-Event", "gitlab": "X-Gitlab-Event"}
DELIVERY_HEADER = {"github": "X-GitHub-Delivery", "gitea": "X-Gitea-Delivery", "gitlab": "X-Gitlab-Event-UUID"}
GITLAB_EVENTS = {"pull_request": "Merge Request Hook", "push": "Push Hook", "tag": "Tag Push Hook"}


def pr_payload(kind: str, action: str, number: int, head: str, repo: str, merged: bool = False,
               merge_sha: str | None = None, base: str = "main") -> dict:
    """A pull request (GitLab: merge request) event; ``action`` is GitHub's name for it."""
    if kind == "gitlab":
        gl_action = {"opened": "open", "synchronize": "update", "reopened": "reopen"}.get(action, action)
        if action == "closed" and merged:
            gl_action = "merge"
        return {"object_kind": "merge_request", "event_type": "merge_request", "user": {"username": "dev"},
                "project": {"id": 7, "path_with_namespace": repo, "default_branch": "main"},
                "object_attributes": {"action": gl_action, "iid": number, "id": 9000 + number,
                                      "state": "merged" if gl_action == "merge" else "opened",
                                      "last_commit": {"id": head}, "merge_commit_sha": merge_sha,
                                      "source_branch": "feature/x", "target_branch": base}}
    if kind == "gitea" and action == "synchronize":
        action = "synchronized"
    return {"action": action, "number": number, "repository": {"full_name": repo, "default_branch": "main"},
            "pull_request": {"number": number, "merged": merged, "merge_commit_sha": merge_sha,
                             "state": "closed" if action == "closed" else "open",
                             "head": {"sha": head, "ref": "feature/x"}, "base": {"ref": base}}}


def push_payload(kind: str, ref: str, after: str, repo: str, commit: str | None = None) -> dict:
    """A push; ``commit`` differs from ``after`` for an annotated tag (``after`` is then the tag object)."""
    commit = commit or after
    zero = after == "0" * 40
    if kind == "gitlab":
        return {"object_kind": "tag_push" if ref.startswith("refs/tags/") else "push", "ref": ref,
                "before": "0" * 40, "after": after, "checkout_sha": None if zero else commit,
                "project": {"path_with_namespace": repo}}
    return {"ref": ref, "before": "0" * 40, "after": after, "deleted": zero, "created": not zero,
            "head_commit": None if zero else {"id": commit}, "repository": {"full_name": repo}}


def signed(kind: str, event: str, payload: dict | bytes, secret: str, delivery: str | None = None) -> tuple[dict, bytes]:
    """Headers (as the forge sends them) and body of one delivery; ``event`` is GitHub's event name."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    delivery = delivery or str(uuid.uuid4())
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if kind == "github":
        return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": f"sha256={mac}",
                "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/0"}, body
    if kind == "gitea":
        return {"X-Gitea-Event": event, "X-Gitea-Delivery": delivery, "X-Gitea-Signature": mac,
                "Content-Type": "application/json"}, body
    return {"X-Gitlab-Event": GITLAB_EVENTS.get(event, event), "X-Gitlab-Event-UUID": delivery,
            "X-Gitlab-Token": secret, "Content-Type": "application/json"}, body


def lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


def new_sha() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]
