"""The Kubernetes rollout on a cluster, where $KUBECONFIG points at one (the decisions without a cluster:
tests/unit/tasks/test_deploy_kubernetes.py)."""

from __future__ import annotations

import os
import uuid

import pytest

from tasks.deploy.plan import ComponentRelease


@pytest.mark.kubernetes
@pytest.mark.skipif(not (os.environ.get("KUBECONFIG") and os.environ.get("OPSFLOW_K8S_TEST_IMAGE")),
                    reason="needs a cluster ($KUBECONFIG) and an image it can pull ($OPSFLOW_K8S_TEST_IMAGE, "
                           "repo@sha256:… answering GET /healthz on port 8080)")
def test_rolling_deploy_on_a_cluster():
    from blocks import KubernetesTarget
    from tasks.deploy.k8s import rollout_kubernetes

    target = KubernetesTarget(name="test-cluster", namespace=os.environ.get("OPSFLOW_K8S_TEST_NAMESPACE", "default"))
    release = ComponentRelease(app=f"k8s-{uuid.uuid4().hex[:6]}", component="web",
                               image=os.environ["OPSFLOW_K8S_TEST_IMAGE"], version="it", ports=[8080],
                               health_deadline_s=120)
    assert "available" in rollout_kubernetes(target, release)
