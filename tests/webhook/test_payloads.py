"""Payload parsing and routing (pure functions), every forge."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opsflow.webhook.payloads import Ignored, Invalid, Trigger, parse
from opsflow.webhook.routing import PIPELINES, AppIndex, AppInfo, Route, load_applications, route
from tests.webhook.deliveries import KINDS, lower, pr_payload, push_payload, signed

SECRET = "s3cret-hook"
HEAD, MERGE, TAG_OBJECT = "a" * 40, "b" * 40, "c" * 40
SHOP = AppInfo(name="shop", default_branch="main", ml_project=False)


def _parse(kind: str, event: str, payload, delivery: str | None = None):
    headers, body = signed(kind, event, payload, SECRET, delivery)
    return parse(kind, lower(headers), body)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("action", ["opened", "synchronize", "reopened"])
def test_an_opened_or_updated_pull_request_starts_the_pr_deployment(kind, action):
    trigger = _parse(kind, "pull_request", pr_payload(kind, action, 4, HEAD, "o/r"), "d-1")
    event = {"github": "pull_request", "gitea": "pull_request", "gitlab": "Merge Request Hook"}[kind]
    assert trigger == Trigger(kind, "d-1", event, "o/r", "pr", HEAD, pr=4, branch="main")
    assert route(trigger, SHOP, "forge") == Route(
        "gitops-pr/default", {"app": "shop", "sha": HEAD, "forge_block": "forge", "pr": 4}, f"pr:o/r:4:{HEAD}", "shop")


@pytest.mark.parametrize("kind", KINDS)
def test_a_merged_pull_request_starts_the_merge_deployment_and_a_closed_one_nothing(kind):
    merged = route(_parse(kind, "pull_request", pr_payload(kind, "closed", 4, HEAD, "o/r", True, MERGE)), SHOP, "f")
    assert merged == Route("gitops-merge/default", {"app": "shop", "sha": MERGE, "branch": "main", "pr": 4,
                                                    "forge_block": "f"}, f"merge:o/r:{MERGE}", "shop")
    closed = pr_payload(kind, "closed", 4, HEAD, "o/r", False)
    if kind == "gitlab":
        closed["object_attributes"]["action"] = "close"
    assert isinstance(_parse(kind, "pull_request", closed), Ignored)


@pytest.mark.parametrize("kind", KINDS)
def test_a_push_to_the_default_branch_is_the_same_merge_run_as_its_merged_pr(kind):
    push = route(_parse(kind, "push", push_payload(kind, "refs/heads/main", MERGE, "o/r")), SHOP, "forge")
    assert push.deployment == "gitops-merge/default" and push.idempotency_key == f"merge:o/r:{MERGE}"
    assert push.parameters == {"app": "shop", "sha": MERGE, "branch": "main", "forge_block": "forge"}
    other_branch = _parse(kind, "push", push_payload(kind, "refs/heads/feature", MERGE, "o/r"))
    assert isinstance(route(other_branch, SHOP, "forge"), Ignored)
    deleted = _parse(kind, "push", push_payload(kind, "refs/heads/main", "0" * 40, "o/r"))
    assert isinstance(deleted, Ignored) and "deleted" in deleted.reason


@pytest.mark.parametrize("kind", KINDS)
def test_a_version_tag_starts_the_merge_deployment_with_the_tagged_commit(kind):
    event = "tag" if kind == "gitlab" else "push"
    # An annotated tag: `after` is the tag object, the commit is head_commit.id (GitLab: checkout_sha).
    tag = route(_parse(kind, event, push_payload(kind, "refs/tags/v1.4.2", TAG_OBJECT, "o/r", commit=MERGE)),
                SHOP, "f")
    assert tag.deployment == "gitops-merge/default"
    assert tag.parameters == {"app": "shop", "sha": MERGE, "branch": "main", "version": "v1.4.2", "forge_block": "f"}
    assert tag.idempotency_key == f"merge:o/r:{MERGE}:v1.4.2"
    assert isinstance(_parse(kind, event, push_payload(kind, "refs/tags/-x", MERGE, "o/r")), Ignored)
    assert isinstance(_parse(kind, event, push_payload(kind, "refs/tags/v1", "0" * 40, "o/r")), Ignored)
    assert isinstance(_parse(kind, event, push_payload(kind, "refs/notes/x", MERGE, "o/r")), Ignored)


def test_ml_projects_go_to_the_mlops_deployments_and_unknown_repos_are_ignored():
    trigger = _parse("github", "pull_request", pr_payload("github", "opened", 2, HEAD, "o/ml"))
    assert route(trigger, AppInfo("ml", "main", True), "f").deployment == "mlops-pr/default"
    merged = _parse("github", "pull_request", pr_payload("github", "closed", 2, HEAD, "o/ml", True, MERGE))
    assert route(merged, AppInfo("ml", "main", True), "f").deployment == "mlops-merge/default"
    assert route(trigger, SHOP, "f", deployment="staging").deployment == "gitops-pr/staging"
    assert isinstance(route(trigger, None, "f"), Ignored)
    assert PIPELINES == {"gitops": ("gitops-pr", "gitops-merge"), "mlops": ("mlops-pr", "mlops-merge")}


@pytest.mark.parametrize("kind, event", [("github", "ping"), ("github", "issues"), ("gitea", "create"),
                                         ("gitlab", "Note Hook")])
def test_other_events_are_ignored(kind, event):
    payload = {"zen": "hi", "hook_id": 1} if kind != "gitlab" else {"object_kind": "note"}
    assert isinstance(_parse(kind, event, payload), Ignored)


@pytest.mark.parametrize("kind", KINDS)
def test_other_pull_request_actions_are_ignored(kind):
    payload = pr_payload(kind, "labeled", 3, HEAD, "o/r")
    if kind == "gitlab":
        payload["object_attributes"]["action"] = "approved"
    assert isinstance(_parse(kind, "pull_request", payload), Ignored)


@pytest.mark.parametrize("kind, payload, field", [
    ("github", {"action": "opened", "repository": {"full_name": "o/r"}}, "pull_request.number"),
    ("github", pr_payload("github", "opened", 1, "main; rm -rf /", "o/r"), "pull_request.head.sha"),
    ("github", pr_payload("github", "opened", -1, HEAD, "o/r"), "pull_request.number"),
    ("github", pr_payload("github", "opened", True, HEAD, "o/r"), "pull_request.number"),
    ("github", pr_payload("github", "opened", 1, HEAD, "../etc"), "repository.full_name"),
    ("github", pr_payload("github", "opened", 1, HEAD, "o/r", base="main;reboot"), "pull_request.base.ref"),
    ("github", pr_payload("github", "closed", 1, HEAD, "o/r", True, None), "pull_request.merge_commit_sha"),
    ("github", {"ref": "refs/heads/main", "repository": {"full_name": "o/r"}}, "after"),
    ("gitea", {"ref": 5, "after": MERGE, "repository": {"full_name": "o/r"}}, "ref"),
    ("gitlab", {"object_kind": "merge_request", "project": {"path_with_namespace": "o/r"},
                "object_attributes": {"action": "open", "iid": 1, "target_branch": "main"}},
     "object_attributes.last_commit"),
    ("gitlab", {"object_kind": "push", "ref": "refs/heads/main", "after": MERGE}, "project.path_with_namespace"),
    ("gitlab", {"ref": "refs/heads/main"}, "object_kind"),
    ("github", b'{"action": "opened", "numb', "JSON"),
    ("github", b"\xff\xfe", "JSON"),
    ("github", b"[1, 2]", "JSON object"),
])
def test_malformed_deliveries_name_the_field(kind, payload, field):
    event = "push" if isinstance(payload, dict) and "ref" in payload else "pull_request"
    with pytest.raises(Invalid, match=field.replace(".", r"\.")):
        _parse(kind, event, payload)


@pytest.mark.parametrize("kind", KINDS)
def test_a_delivery_without_its_id_or_event_is_malformed(kind):
    headers, body = signed(kind, "pull_request", pr_payload(kind, "opened", 1, HEAD, "o/r"), SECRET)
    for header in ({"github": "X-GitHub-Delivery", "gitea": "X-Gitea-Delivery", "gitlab": "X-Gitlab-Event-UUID"}[kind],
                   {"github": "X-GitHub-Event", "gitea": "X-Gitea-Event", "gitlab": "X-Gitlab-Event"}[kind]):
        with pytest.raises(Invalid, match=header.lower()):
            parse(kind, lower({k: v for k, v in headers.items() if k != header}), body)
    with pytest.raises(Invalid, match="malformed header"):
        parse(kind, {**lower(headers), "x-github-delivery": "a b", "x-gitea-delivery": "a b",
                     "x-gitlab-event-uuid": "a b"}, body)


def test_gitlab_prefers_the_idempotency_key_which_survives_its_retries():
    headers, body = signed("gitlab", "pull_request", pr_payload("gitlab", "opened", 1, HEAD, "o/r"), SECRET, "uuid-1")
    assert parse("gitlab", lower(headers), body).delivery == "uuid-1"
    assert parse("gitlab", {**lower(headers), "idempotency-key": "key-1"}, body).delivery == "key-1"
    del headers["X-Gitlab-Event-UUID"]
    assert parse("gitlab", {**lower(headers), "idempotency-key": "key-1"}, body).delivery == "key-1"
    github_headers, github_body = signed("github", "pull_request", pr_payload("github", "opened", 1, HEAD, "o/r"),
                                         SECRET)
    del github_headers["X-GitHub-Delivery"]
    with pytest.raises(Invalid):  # GitHub's own header only
        parse("github", {**lower(github_headers), "idempotency-key": "k"}, github_body)


def test_the_index_is_refreshed_on_a_miss_at_most_every_few_seconds(monkeypatch):
    from opsflow.errors import RemoteError
    from opsflow.webhook import routing

    loads = []
    apps = {"o/r": SHOP}
    index = AppIndex(lambda: loads.append(1) or dict(apps))
    assert index.get("o/r") == SHOP and index.get("o/other") is None and len(loads) == 1  # miss within REFRESH_S
    monkeypatch.setattr(routing, "REFRESH_S", 0.0)
    apps["o/other"] = SHOP
    assert index.get("o/other") == SHOP and len(loads) == 2
    index = AppIndex(lambda: (_ for _ in ()).throw(ConnectionError("down")))
    with pytest.raises(RemoteError, match="ConnectionError"):
        index.get("o/r")


def test_applications_are_indexed_by_forge_repo_under_their_block_name():
    from types import SimpleNamespace as Doc

    docs = [Doc(name="shop-prod", is_anonymous=False, data={"name": "shop", "forge_repo": "acme/shop"}),
            Doc(name="ml", is_anonymous=False, data={"name": "ml", "forge_repo": "acme/ml", "ml_project": True,
                                                     "default_branch": "trunk"}),
            Doc(name="a-dup", is_anonymous=False, data={"name": "x", "forge_repo": "acme/shop"}),
            Doc(name="no-repo", is_anonymous=False, data={"name": "y", "forge_repo": ""}),
            Doc(name=None, is_anonymous=True, data={"name": "z", "forge_repo": "acme/z"})]

    class Client:
        def read_block_documents_by_type(self, block_type_slug, offset, limit, include_secrets):
            assert block_type_slug == "opsflow-application" and not include_secrets
            return docs[offset:offset + limit]

    apps = load_applications(Client())
    assert apps == {"acme/shop": AppInfo("a-dup", "main", False), "acme/ml": AppInfo("ml", "trunk", True)}


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(KINDS), event=st.sampled_from(["pull_request", "push", "Merge Request Hook", "x"]),
       body=st.one_of(st.binary(max_size=300), st.recursive(
           st.none() | st.booleans() | st.integers() | st.text(max_size=50) | st.just("a" * 40),
           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
               ["action", "number", "pull_request", "head", "sha", "ref", "after", "repository", "full_name",
                "object_kind", "object_attributes", "merged", "project", "path_with_namespace", "iid", "base",
                "last_commit", "id", "merge_commit_sha", "checkout_sha", "head_commit"]), inner, max_size=6),
           max_leaves=25).map(lambda v: json.dumps(v).encode())))
def test_random_bodies_never_crash_the_parser(kind, event, body):
    headers = {"x-github-event": event, "x-gitea-event": event, "x-gitlab-event": event,
               "x-github-delivery": "d", "x-gitea-delivery": "d", "x-gitlab-event-uuid": "d"}
    try:
        result = parse(kind, headers, body)
    except Invalid as exc:
        assert str(exc)
        return
    assert isinstance(result, (Trigger, Ignored))
    if isinstance(result, Trigger):
        assert len(result.sha) in (40, 64) and "/" in result.repo
        assert isinstance(route(result, SHOP, "f"), (Route, Ignored))
