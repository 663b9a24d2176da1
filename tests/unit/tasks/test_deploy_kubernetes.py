"""Kubernetes deploy decisions without a cluster (the rollout itself, where $KUBECONFIG points at one:
tests/integration/tasks/test_deploy_kubernetes.py)."""

from __future__ import annotations

import pytest

from tasks.deploy.k8s import COMPLETE, FAILED, PROGRESSING, next_colour, previous_manifest, rollout_verdict
from tasks.deploy.k8s_manifests import kubernetes_manifests
from tasks.deploy.plan import ComponentRelease


def dep(generation=2, observed=2, replicas=3, updated=3, available=3, total=3, conditions=()):
    return {"metadata": {"generation": generation}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "availableReplicas": available,
                       "replicas": total, "conditions": list(conditions)}}


@pytest.mark.parametrize("deployment, verdict", [
    (dep(), COMPLETE),
    (dep(observed=1), PROGRESSING),
    (dep(updated=1), PROGRESSING),
    (dep(total=4), PROGRESSING),
    (dep(available=2), PROGRESSING),
    (dep(updated=1, conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded",
                                 "message": "ReplicaSet has timed out progressing."}]), FAILED),
])
def test_rollout_verdicts(deployment, verdict):
    assert rollout_verdict(deployment)[0] == verdict


def test_blue_green_alternates_and_rollback_restores_the_previous_template():
    assert next_colour(None) == "blue"
    assert next_colour({"spec": {"selector": {"opsflow.org/colour": "blue"}}}) == "green"
    assert next_colour({"spec": {"selector": {"opsflow.org/colour": "green"}}}) == "blue"
    new = ComponentRelease(app="shop", component="web", image="r/shop-web@sha256:" + "b" * 64, version="v2",
                           ports=[8080])
    old = ComponentRelease(app="shop", component="web", image="r/shop-web@sha256:" + "a" * 64, version="v1",
                           replicas=2, ports=[8080])
    planned, current = kubernetes_manifests(new, "prod")[0], kubernetes_manifests(old, "prod")[0]
    back = previous_manifest(current, planned)
    assert back["spec"]["template"]["spec"]["containers"][0]["image"].endswith("a" * 64)
    assert back["spec"]["replicas"] == 2 and back["metadata"]["name"] == planned["metadata"]["name"]
    assert previous_manifest(None, planned) is None
