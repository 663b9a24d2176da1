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


LABEL_APP = AppInfo(name="shop", default_branch="main", ml_project=False, trusted_label="safe-to-test")


def _labeled(kind: str, label: str, number: int = 9) -> dict:
    payload = pr_payload(kind, "opened", number, HEAD, "o/r")
    if kind == "github":
        payload.update(action="labeled", label={"name": label})
    elif kind == "gitea":
        payload.update(action="label_updated")
        payload["pull_request"]["labels"] = [{"name": "bug"}, {"name": label}]
    else:
        payload["object_attributes"]["action"] = "update"
        payload["changes"] = {"labels": {"previous": [{"title": "bug", "name": "bug"}],
                                         "current": [{"name": "bug"}, {"name": label}]}}
    return payload


@pytest.mark.parametrize("kind", KINDS)
def test_the_trusted_label_starts_a_run_of_its_own_and_other_labels_nothing(kind):
    event = "pull_request_label" if kind == "gitea" else "pull_request"
    opened = parse(kind, lower(signed(kind, "pull_request", pr_payload(kind, "opened", 9, HEAD, "o/r"), SECRET)[0]),
                   signed(kind, "pull_request", pr_payload(kind, "opened", 9, HEAD, "o/r"), SECRET)[1])
    headers, body = signed(kind, event, _labeled(kind, "safe-to-test"), SECRET)
    labeled = route(parse(kind, lower(headers), body), LABEL_APP, "forge")
    first = route(opened, LABEL_APP, "forge")
    assert labeled.deployment == first.deployment == "gitops-pr/default"
    assert labeled.parameters == first.parameters and labeled.idempotency_key != first.idempotency_key
    headers, body = signed(kind, event, _labeled(kind, "needs-review"), SECRET)
    assert isinstance(route(parse(kind, lower(headers), body), LABEL_APP, "forge"), Ignored)


def test_json_nested_too_deep_is_malformed_not_a_crash():
    from opsflow.webhook.payloads import MAX_NESTING, _nesting

    deep = b'{"action": "opened", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    headers, body = signed("github", "pull_request", deep, SECRET)
    with pytest.raises(InvalidDelivery, match="nested deeper than"):
        parse("github", lower(headers), body)
    assert _nesting(b'{"a": "[[[{{{\\"]]]", "b": [[1], {"c": 2}]}') == 3
    assert _nesting(b"[" * (MAX_NESTING + 1)) == MAX_NESTING + 1


def test_request_routes_match_exactly_and_heads_naming_content_length_twice_are_refused():
    from opsflow.webhook.http import repeated_content_length
    from opsflow.webhook.server import Receiver, route_request, status_signature

    receiver = Receiver("forge", "github", SECRET, None, None, None)
    assert route_request(receiver, "POST", "/hooks/github", b"/hooks/github") == "post"
    assert route_request(receiver, "GET", "/hooks/github/deliveries/d-1", b"/hooks/github/deliveries/d-1") == "status"
    for path in ("/hooks/../hooks/github", "/hooks/./github", "//hooks/github"):
        assert route_request(receiver, "POST", path, path.encode())[0] == 400
    assert route_request(receiver, "POST", "/hooks/../hooks/github", b"/hooks/%2e%2e/hooks/github")[0] == 400
    assert route_request(receiver, "POST", "/hooks/gitlab", b"/hooks/gitlab")[0] == 404
    assert route_request(receiver, "GET", "/hooks/github", b"/hooks/github")[0] == 405
    assert repeated_content_length(b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5")
    assert not repeated_content_length(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nX-Content-Length: 5")
    assert status_signature(SECRET, "d-1") != status_signature(SECRET, "d-2")
    assert status_signature(SECRET, "d-1").startswith("sha256=") and SECRET not in status_signature(SECRET, "d-1")
