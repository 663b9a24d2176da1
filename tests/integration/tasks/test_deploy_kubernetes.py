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


@pytest.mark.kubernetes
@pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs a cluster ($KUBECONFIG)")
def test_every_manifest_passes_a_server_side_dry_run():
    """What the cluster itself says of the manifests (admission included), stored nowhere (dryRun=All).
    The offline schema validation of the same manifests: tests/unit/tasks/test_deploy_manifests.py."""
    from pydantic import SecretStr

    from blocks import KubernetesTarget
    from blocks.application import Autoscale, DeployMethod, Ingress, RoleKind, RuntimeConfig
    from tasks.deploy.k8s import dry_run_manifests
    from tasks.deploy.k8s_manifests import kubernetes_manifests
    from tasks.deploy.runtime import RuntimeValues

    namespace = os.environ.get("OPSFLOW_K8S_TEST_NAMESPACE", "default")
    target = KubernetesTarget(name="test-cluster", namespace=namespace)
    runtime = RuntimeConfig(env={"LOG_LEVEL": "info"}, env_files=["x"], init=True,
                            secret_files=[{"secret_block": "y", "path": "/run/secrets/token"}])
    values = RuntimeValues(secret_env={"TOKEN": SecretStr("dry-run-only")},
                           files={"/run/secrets/token": (SecretStr("dry-run-only"), 0o444)},
                           names={"x": ["TOKEN"]}, fingerprint="sha256:0123456789ab")
    base = dict(app=f"k8s-{uuid.uuid4().hex[:6]}", component="web", image="registry.lan/web@sha256:" + "d" * 64,
                version="dry", ports=[8080], runtime=runtime)
    service = ComponentRelease(**base, ingress=Ingress(host="dry.example.com", tls_secret="dry-tls"),
                               autoscale=Autoscale(min_replicas=1, max_replicas=3))
    manifests = [*kubernetes_manifests(service, namespace, values=values),
                 *kubernetes_manifests(service.model_copy(update={"method": DeployMethod.blue_green}), namespace,
                                       colour="green", values=values),
                 *kubernetes_manifests(ComponentRelease(**{**base, "ports": []}, role="batch", kind=RoleKind.batch,
                                                        schedule="30 3 * * *"), namespace),
                 *kubernetes_manifests(ComponentRelease(**{**base, "ports": []}, role="once", kind=RoleKind.batch),
                                       namespace)]
    done = dry_run_manifests(target, manifests)
    assert {d.split("/")[0] for d in done} == {"ConfigMap", "Secret", "Deployment", "Service", "Ingress",
                                               "HorizontalPodAutoscaler", "CronJob", "Job"}
