"""A pull request of an ML repository starts mlops-pr with its head branch (the MLflow run's ``opsflow.branch``)."""

from __future__ import annotations

import pytest

from opsflow.webhook.payloads import parse
from opsflow.webhook.routing import AppInfo, route
from tests.support.deliveries import lower, pr_payload, signed

HEAD = "c" * 40
ML = AppInfo(name="ml", default_branch="main", ml_project=True)
SHOP = AppInfo(name="shop", default_branch="main", ml_project=False)


def _pr(kind: str, source_branch: object = "feature/x"):
    payload = pr_payload(kind, "opened", 7, HEAD, "o/ml")
    if kind == "gitlab":
        payload["object_attributes"]["source_branch"] = source_branch
    else:
        payload["pull_request"]["head"]["ref"] = source_branch
    headers, body = signed(kind, "pull_request", payload, "hook-secret")
    return parse(kind, lower(headers), body)


@pytest.mark.parametrize("kind", ["github", "gitea", "gitlab"])
def test_an_ml_pull_request_run_gets_its_head_branch(kind):
    ml = route(_pr(kind, "feature/better-model"), ML, "forge")
    assert ml.deployment == "mlops-pr/default"
    assert ml.parameters == {"app": "ml", "sha": HEAD, "forge_block": "forge", "pr": 7,
                             "branch": "feature/better-model"}
    assert "branch" not in route(_pr(kind), SHOP, "forge").parameters  # gitops-pr takes no branch
    # a missing or malformed source branch only leaves the tag out: the delivery is still accepted
    assert "branch" not in route(_pr(kind, None), ML, "forge").parameters
    assert "branch" not in route(_pr(kind, "bad..branch"), ML, "forge").parameters
