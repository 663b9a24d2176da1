"""Signatures, payload parsing and routing: pure functions, every forge."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opsflow.core.errors import InvalidDelivery
from opsflow.webhook.payloads import Ignored, Trigger, parse
from opsflow.webhook.routing import AppInfo, Route, route
from opsflow.webhook.signatures import verify
from tests.support.deliveries import lower, pr_payload, push_payload, signed

KINDS = ["github", "gitea", "gitlab"]
SECRET = "s3cret-hook"
HEAD, MERGE = "a" * 40, "b" * 40
SHOP = AppInfo(name="shop", default_branch="main", ml_project=False)


@pytest.mark.parametrize("kind", KINDS)
def test_signatures_verify_and_reject(kind):
    headers, body = signed(kind, "pull_request", pr_payload(kind, "opened", 1, HEAD, "o/r"), SECRET)
    assert verify(kind, lower(headers), body, SECRET)
    if kind != "gitlab":  # GitLab sends the secret itself, it signs nothing
        assert not verify(kind, lower(headers), body + b" ", SECRET)
    assert not verify(kind, lower(headers), body, "other")
    assert not verify(kind, {}, body, SECRET)
    assert not verify(kind, lower(headers), body, "")


@pytest.mark.parametrize("kind", KINDS)
def test_pull_request_events(kind):
    headers, body = signed(kind, "pull_request", pr_payload(kind, "synchronize", 4, HEAD, "o/r"), SECRET, "d-1")
    trigger = parse(kind, lower(headers), body)
    assert trigger == Trigger(kind, "d-1", lower(headers)[{"github": "x-github-event", "gitea": "x-gitea-event",
                                                              "gitlab": "x-gitlab-event"}[kind]],
                              "o/r", "pr", HEAD, pr=4, branch="main")
    params = {"app": "shop", "sha": HEAD, "forge_block": "forge", "pr": 4}
    assert route(trigger, SHOP, "forge") == Route("gitops-pr/default", params, f"pr:o/r:4:{HEAD}", "shop")
    headers, body = signed(kind, "pull_request", pr_payload(kind, "closed", 4, HEAD, "o/r", True, MERGE), SECRET)
    merged = route(parse(kind, lower(headers), body), SHOP, "forge")
    assert merged.deployment == "gitops-merge/default" and merged.parameters["sha"] == MERGE
    assert merged.parameters["branch"] == "main" and merged.idempotency_key == f"merge:o/r:{MERGE}"
    headers, body = signed(kind, "pull_request", pr_payload(kind, "closed", 4, HEAD, "o/r", False), SECRET)
    assert isinstance(parse(kind, lower(headers), body), Ignored)


@pytest.mark.parametrize("kind", KINDS)
def test_push_to_the_default_branch_is_the_merge_of_the_same_commit(kind):
    headers, body = signed(kind, "push", push_payload(kind, "refs/heads/main", MERGE, "o/r"), SECRET)
    push = route(parse(kind, lower(headers), body), SHOP, "forge")
    assert push.deployment == "gitops-merge/default" and push.idempotency_key == f"merge:o/r:{MERGE}"
    headers, body = signed(kind, "push", push_payload(kind, "refs/heads/feature", MERGE, "o/r"), SECRET)
    assert isinstance(route(parse(kind, lower(headers), body), SHOP, "forge"), Ignored)
    headers, body = signed(kind, "push", push_payload(kind, "refs/heads/main", "0" * 40, "o/r"), SECRET)
    assert isinstance(parse(kind, lower(headers), body), Ignored)
    headers, body = signed(kind, "push", push_payload(kind, "refs/tags/1.4.2", MERGE, "o/r"), SECRET)
    tag = route(parse(kind, lower(headers), body), SHOP, "forge")
    assert tag.parameters["version"] == "1.4.2" and tag.deployment == "gitops-merge/default"


def test_ml_projects_go_to_the_mlops_deployments_and_unknown_repos_are_ignored():
    headers, body = signed("github", "pull_request", pr_payload("github", "opened", 2, HEAD, "o/ml"), SECRET)
    trigger = parse("github", lower(headers), body)
    assert route(trigger, AppInfo("ml", "main", True), "f").deployment == "mlops-pr/default"
    assert isinstance(route(trigger, None, "f"), Ignored)


@pytest.mark.parametrize("payload, field", [
    ({"action": "opened", "number": 1, "repository": {"full_name": "o/r"}}, "pull_request"),
    (pr_payload("github", "opened", 1, "main; rm -rf /", "o/r"), "pull_request.head.sha"),
    (pr_payload("github", "opened", -1, HEAD, "o/r"), "pull_request.number"),
    (pr_payload("github", "opened", 1, HEAD, "../etc"), "repository.full_name"),
    (pr_payload("github", "opened", 1, HEAD, "o/r", base="main;reboot"), "pull_request.base.ref"),
    (b'{"action": "opened", "numb', "JSON"),
    (b"[1, 2]", "JSON object"),
])
def test_malformed_deliveries_name_the_field(payload, field):
    headers, body = signed("github", "pull_request", payload, SECRET)
    with pytest.raises(InvalidDelivery, match=field.replace(".", r"\.")):
        parse("github", lower(headers), body)


def test_a_delivery_without_its_id_is_malformed():
    headers, body = signed("github", "pull_request", pr_payload("github", "opened", 1, HEAD, "o/r"), SECRET)
    del headers["X-GitHub-Delivery"]
    with pytest.raises(InvalidDelivery, match="x-github-delivery"):
        parse("github", lower(headers), body)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(KINDS), event=st.sampled_from(["pull_request", "push", "Merge Request Hook", "x"]),
       body=st.one_of(st.binary(max_size=300), st.recursive(
           st.none() | st.booleans() | st.integers() | st.text(max_size=50),
           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
               ["action", "number", "pull_request", "head", "sha", "ref", "after", "repository", "full_name",
                "object_kind", "object_attributes", "merged"]), inner, max_size=5), max_leaves=20).map(
           lambda v: __import__("json").dumps(v).encode())))
def test_random_bodies_never_crash_the_parser(kind, event, body):
    headers = {"x-github-event": event, "x-gitea-event": event, "x-gitlab-event": event,
               "x-github-delivery": "d", "x-gitea-delivery": "d", "x-gitlab-event-uuid": "d"}
    try:
        result = parse(kind, headers, body)
    except InvalidDelivery:
        return
    assert isinstance(result, (Trigger, Ignored))
    if isinstance(result, Trigger):
        assert len(result.sha) in (40, 64)
