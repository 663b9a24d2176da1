"""Reading a delivery: headers and JSON body → what should run, or why nothing should (pure functions).

Documented payloads used: GitHub ``pull_request`` (action, number, pull_request.head.sha, .head.ref, .merged,
.merge_commit_sha, .base.ref; ``labeled`` with label.name) and ``push`` (ref, after, deleted); Gitea sends
the same shapes (its ``pull_request_label`` event: action ``label_updated``, pull_request.labels);
GitLab ``merge_request`` (object_attributes.action/iid/last_commit.id/merge_commit_sha/target_branch/
source_branch, changes.labels.previous/current) and ``push``/``tag_push`` (ref, after/checkout_sha). The
repository is ``repository.full_name`` (GitLab: ``project.path_with_namespace``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from blocks.fields import check_branch, check_forge_repo, check_pr_number, check_sha, check_tag
from opsflow.core.errors import InvalidDelivery, InvalidInput

DELIVERY_HEADERS = {"github": "x-github-delivery", "gitea": "x-gitea-delivery", "gitlab": "x-gitlab-event-uuid"}
EVENT_HEADERS = {"github": "x-github-event", "gitea": "x-gitea-event", "gitlab": "x-gitlab-event"}
_DELIVERY = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_ZERO = "0" * 40
PR_ACTIONS = {"opened", "synchronize", "synchronized", "reopened", "open", "update", "reopen"}
# The forges' payloads nest a handful of levels; JSON nested a thousand deep only exhausts the parser's stack.
MAX_NESTING = 64
_JSON_TOKENS = re.compile(rb'\\.|[\[\]{}"]', re.DOTALL)  # an escape (one unit), a bracket or a quote


def _nesting(body: bytes) -> int:
    """The deepest ``[``/``{`` nesting of a JSON text (brackets inside strings do not count); linear, no recursion."""
    depth = deepest = 0
    in_string = False
    for match in _JSON_TOKENS.finditer(body):
        token = match.group()
        if in_string:
            in_string = token != b'"'
        elif token == b'"':
            in_string = True
        elif token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


@dataclass(frozen=True)
class Ignored:
    """A well-formed delivery that starts nothing, and why."""

    reason: str


@dataclass(frozen=True)
class Trigger:
    """A delivery that should start a pipeline stage: ``pr``, ``merge`` or ``push`` (routing decides)."""

    kind: str
    delivery: str
    event: str
    repo: str
    stage: str
    sha: str
    pr: int | None = None
    branch: str | None = None
    version: str | None = None
    #: a pull request's source branch (the MLOps runs are tagged with it); not part of what a delivery means
    head_branch: str | None = field(default=None, compare=False)
    labels: tuple[str, ...] = ()  # a label event: the labels added (Gitea: all the pull request has)

    @property
    def idempotency_key(self) -> str:
        """Deliveries that mean the same run share this key (a merged PR and the push of its merge commit).
        A label added to a pull request is a run of its own (the one a held run waited for)."""
        if self.stage == "pr":
            return f"pr:{self.repo}:{self.pr}:{self.sha}" + (":labeled" if self.labels else "")
        return f"merge:{self.repo}:{self.sha}" + (f":{self.version}" if self.version else "")


def _get(data: dict, path: str):
    node = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise InvalidDelivery(f"missing field {path}")
        node = node[part]
    return node


def _is_tag(value: str) -> bool:
    try:
        check_tag(value)
    except InvalidInput:
        return False
    return True


def _field(data: dict, path: str, check: Callable[[Any], Any], what: str):
    """The value at ``path``, checked by one of ``blocks.fields``' checks; InvalidDelivery names the field."""
    value = _get(data, path)
    try:
        return check(value)
    except (InvalidInput, TypeError):
        raise InvalidDelivery(f"field {path} is not {what}") from None


def _sha(data: dict, path: str) -> str:
    return _field(data, path, check_sha, "a full commit SHA")


def _number(data: dict, path: str) -> int:
    return _field(data, path, check_pr_number, "a pull request number")


def _repo(data: dict, path: str) -> str:
    return _field(data, path, check_forge_repo, "an owner/name repository")


def _branch(data: dict, path: str) -> str:
    value = _get(data, path)
    try:
        return check_branch(value if isinstance(value, str) else "")
    except InvalidInput as exc:
        raise InvalidDelivery(f"field {path}: {exc}") from None


def _head_branch(data: dict, path: str) -> str | None:
    """A PR's source branch when the payload has a valid one (it only labels the run: never a reason to refuse)."""
    try:
        return _branch(data, path)
    except InvalidDelivery:
        return None


def parse(kind: str, headers: dict[str, str], body: bytes) -> Trigger | Ignored:
    """What a (signature-checked) delivery asks for. Headers are keyed in lower case.

    Raises:
        InvalidDelivery: malformed JSON, a missing or malformed field or header (named in the message).
    """
    delivery = headers.get(DELIVERY_HEADERS[kind]) or headers.get("idempotency-key", "")
    if not _DELIVERY.fullmatch(delivery or ""):
        raise InvalidDelivery(f"missing or malformed header {DELIVERY_HEADERS[kind]}")
    event = headers.get(EVENT_HEADERS[kind], "")
    if not event:
        raise InvalidDelivery(f"missing header {EVENT_HEADERS[kind]}")
    if _nesting(body) > MAX_NESTING:
        raise InvalidDelivery(f"the body's JSON is nested deeper than {MAX_NESTING} levels")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidDelivery("the body is not valid JSON") from None
    except RecursionError:
        raise InvalidDelivery(f"the body's JSON is nested deeper than {MAX_NESTING} levels") from None
    if not isinstance(data, dict):
        raise InvalidDelivery("the body is not a JSON object")
    parse_event = _parse_gitlab if kind == "gitlab" else _parse_github_like
    return parse_event(kind, delivery, event, data)


def _label_names(items) -> tuple[str, ...]:
    return tuple(str(i.get("name") if isinstance(i, dict) else i) for i in items or [] if i)


def _parse_github_like(kind: str, delivery: str, event: str, data: dict) -> Trigger | Ignored:
    if event in ("pull_request", "pull_request_label"):
        action = _get(data, "action")
        repo = _repo(data, "repository.full_name")
        number = _number(data, "pull_request.number")
        if action in PR_ACTIONS or action in ("labeled", "label_updated"):
            if action == "labeled":
                labels = _label_names([data.get("label")])
            elif action == "label_updated":
                labels = _label_names((data.get("pull_request") or {}).get("labels"))
            else:
                labels = ()
            if action in ("labeled", "label_updated") and not labels:
                return Ignored(f"pull_request action {action!r} without a label")
            return Trigger(kind, delivery, event, repo, "pr", _sha(data, "pull_request.head.sha"), pr=number,
                           branch=_branch(data, "pull_request.base.ref"),
                           head_branch=_head_branch(data, "pull_request.head.ref"), labels=labels)
        if action == "closed" and _get(data, "pull_request.merged") is True:
            return Trigger(kind, delivery, event, repo, "merge", _sha(data, "pull_request.merge_commit_sha"),
                           pr=number, branch=_branch(data, "pull_request.base.ref"))
        return Ignored(f"pull_request action {action!r}")
    if event == "push":
        return _push(kind, delivery, event, data, _repo(data, "repository.full_name"), "after")
    return Ignored(f"event {event!r}")


def _parse_gitlab(kind: str, delivery: str, event: str, data: dict) -> Trigger | Ignored:
    object_kind = _get(data, "object_kind")
    if object_kind == "merge_request":
        repo = _repo(data, "project.path_with_namespace")
        action = _get(data, "object_attributes.action")
        number = _number(data, "object_attributes.iid")
        branch = _branch(data, "object_attributes.target_branch")
        if action in PR_ACTIONS:
            changes = (data.get("changes") or {}).get("labels") or {}
            current, previous = _label_names(changes.get("current")), _label_names(changes.get("previous"))
            added = tuple(sorted(set(current) - set(previous)))
            if action == "update" and changes and not added:
                return Ignored("merge_request update that removed labels")
            return Trigger(kind, delivery, event, repo, "pr", _sha(data, "object_attributes.last_commit.id"),
                           pr=number, branch=branch,
                           head_branch=_head_branch(data, "object_attributes.source_branch"), labels=added)
        if action == "merge":
            return Trigger(kind, delivery, event, repo, "merge", _sha(data, "object_attributes.merge_commit_sha"),
                           pr=number, branch=branch)
        return Ignored(f"merge_request action {action!r}")
    if object_kind in ("push", "tag_push"):
        return _push(kind, delivery, event, data, _repo(data, "project.path_with_namespace"), "after")
    return Ignored(f"object_kind {object_kind!r}")


def _push(kind: str, delivery: str, event: str, data: dict, repo: str, after_field: str) -> Trigger | Ignored:
    ref = _get(data, "ref")
    after = _get(data, after_field)
    if after == _ZERO or data.get("deleted") is True:
        return Ignored(f"{ref} was deleted")
    sha = _sha(data, after_field)
    if isinstance(ref, str) and ref.startswith("refs/heads/"):
        return Trigger(kind, delivery, event, repo, "push", sha, branch=_branch({"ref": ref[11:]}, "ref"))
    if isinstance(ref, str) and ref.startswith("refs/tags/") and _is_tag(ref[10:]):
        return Trigger(kind, delivery, event, repo, "tag", sha, version=ref[10:])
    return Ignored(f"push to {ref!r}")
