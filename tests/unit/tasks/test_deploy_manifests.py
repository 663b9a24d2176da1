"""Every Kubernetes manifest opsflow generates, validated offline against the official OpenAPI schemas
of a current Kubernetes minor (kubernetes-validate, strict: unknown fields fail too); the plan shows
no Secret value. With $KUBECONFIG set, the same manifests go through a server-side dry run
(tests/integration/tasks/test_deploy_kubernetes.py)."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version
from pydantic import SecretStr

from blocks.application import Autoscale, DeployMethod, Ingress, RoleKind, RuntimeConfig
from opsflow.core.errors import InvalidInput
from tasks.deploy.k8s import COMPLETE, FAILED, PROGRESSING, job_verdict
from tasks.deploy.k8s_manifests import kubernetes_manifests, redacted
from tasks.deploy.plan import ComponentRelease
from tasks.deploy.runtime import RuntimeValues

IMAGE = "registry.lan/shop-api@sha256:" + "c" * 64
K8S_VERSION = latest_version()
SECRET = "s3cr3t-db-pa55word"
RUNTIME = RuntimeConfig(
    env={"DATABASE_HOST": "db.shop.svc", "LOG_LEVEL": "info"}, env_files=["shop-api-env"],
    secret_files=[{"secret_block": "shop-db-password", "path": "/run/secrets/db-password", "mode": 0o440}],
    volumes=[{"source": "shop-data", "target": "/var/lib/shop"},
             {"source": "/srv/shop/uploads", "target": "/uploads", "read_only": True}],
    command=["node"], args=["dist/server.js"], init=True,
    labels={"traefik.ingress.kubernetes.io/router.middlewares": "default-redirect@kubernetescrd"})
VALUES = RuntimeValues(secret_env={"DATABASE_PASSWORD": SecretStr(SECRET), "API_TOKEN": SecretStr("tok-123456")},
                       files={"/run/secrets/db-password": (SecretStr(SECRET), 0o440)},
                       names={"shop-api-env": ["API_TOKEN", "DATABASE_PASSWORD"]}, fingerprint="sha256:0123456789ab")


def release(**extra) -> ComponentRelease:
    return ComponentRelease(**{"app": "shop", "component": "api", "image": IMAGE, "version": "v1.4.2", "replicas": 3,
                               "cpu": "500m", "memory": "1.5Gi", "ports": [8080, 9090], "runtime": RUNTIME, **extra})


def validate_all(manifests: list[dict]) -> list[str]:
    for manifest in manifests:
        kubernetes_validate.validate(json.loads(json.dumps(manifest)), K8S_VERSION, strict=True)
    return [m["kind"] for m in manifests]


def test_rolling_service_with_config_secret_ingress_and_autoscaler_is_valid():
    rel = release(ingress=Ingress(host="shop.example.com", path="/api", tls_secret="shop-tls"),
                  autoscale=Autoscale(min_replicas=2, max_replicas=8, cpu_percent=60))
    manifests = kubernetes_manifests(rel, "prod", values=VALUES, allowed_host_paths=["/srv/shop"],
                                     ingress_class="nginx")
    assert validate_all(manifests) == ["ConfigMap", "Secret", "Secret", "Deployment", "Service", "Ingress",
                                       "HorizontalPodAutoscaler"]
    config, env_secret, files_secret, deployment, service, ingress, hpa = manifests
    assert config["data"] == {"DATABASE_HOST": "db.shop.svc", "LOG_LEVEL": "info"} and config["immutable"]
    assert env_secret["stringData"] == {"DATABASE_PASSWORD": SECRET, "API_TOKEN": "tok-123456"}
    assert list(files_secret["stringData"]) == ["run_secrets_db-password"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}},
                                    {"secretRef": {"name": env_secret["metadata"]["name"]}}]
    assert container["command"] == ["node"] and container["args"] == ["dist/server.js"]
    assert pod["shareProcessNamespace"] is True  # init: the pause container is PID 1
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/run/secrets/db-password"]["subPath"] == "run_secrets_db-password"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["vol-0"]["persistentVolumeClaim"] == {"claimName": "shop-data"}
    assert volumes["vol-1"]["hostPath"]["path"] == "/srv/shop/uploads"
    assert volumes["secret-files"]["secret"]["items"][0]["mode"] == 0o440
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    assert deployment["spec"]["template"]["metadata"]["annotations"][
        "traefik.ingress.kubernetes.io/router.middlewares"] == "default-redirect@kubernetescrd"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]
    path = ingress["spec"]["rules"][0]["http"]["paths"][0]
    assert path["path"] == "/api" and path["backend"]["service"] == {"name": "shop-api", "port": {"number": 8080}}
    assert hpa["spec"]["scaleTargetRef"]["name"] == "shop-api" and hpa["spec"]["maxReplicas"] == 8
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_blue_green_pair_and_its_switch_are_valid():
    rel = release(method=DeployMethod.blue_green, autoscale=Autoscale(min_replicas=1, max_replicas=3))
    blue = kubernetes_manifests(rel, "prod", colour="blue", values=VALUES, allowed_host_paths=["/srv"])
    green = kubernetes_manifests(rel, "prod", colour="green", values=VALUES, allowed_host_paths=["/srv"])
    validate_all(blue + green)
    names = {m["kind"]: m["metadata"]["name"] for m in blue}
    assert names["Deployment"] == "shop-api-blue" and names["Service"] == "shop-api"
    by_kind = {m["kind"]: m for m in green}
    assert by_kind["Service"]["spec"]["selector"]["opsflow.org/colour"] == "green"
    assert by_kind["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == "shop-api-green"


def test_batch_roles_become_a_job_or_a_cronjob_and_are_valid():
    batch = dict(role="batch", kind=RoleKind.batch, ports=[], runtime=RuntimeConfig(args=["node", "dist/batch.js"]))
    cron = kubernetes_manifests(release(**batch, schedule="30 3 * * *"), "prod")
    once = kubernetes_manifests(release(**batch), "prod")
    assert validate_all(cron) == ["CronJob"] and validate_all(once) == ["Job"]
    assert cron[0]["metadata"]["name"] == "shop-api-batch" and cron[0]["spec"]["schedule"] == "30 3 * * *"
    job = once[0]
    assert job["metadata"]["name"] == "shop-api-batch-cccccccccccc"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["node", "dist/batch.js"]
    assert "readinessProbe" not in job["spec"]["template"]["spec"]["containers"][0]


def test_the_plan_shows_no_secret_value():
    manifests = kubernetes_manifests(release(), "prod", values=VALUES, allowed_host_paths=["/srv"])
    shown = json.dumps(redacted(manifests, VALUES))
    assert SECRET not in shown and "tok-123456" not in shown
    assert "DATABASE_PASSWORD" in shown and "sha256:0123456789ab" in shown
    assert SECRET in json.dumps(manifests)  # what is applied has them


def test_host_paths_outside_the_allowed_roots_and_bad_names_are_refused():
    with pytest.raises(InvalidInput, match="/srv/shop/uploads is not under"):
        kubernetes_manifests(release(), "prod", values=VALUES, allowed_host_paths=["/var/lib"])
    with pytest.raises(InvalidInput, match="not a Kubernetes name"):
        kubernetes_manifests(release(app="shop_app"), "prod", values=VALUES, allowed_host_paths=["/srv"])
    with pytest.raises(InvalidInput, match=r"ingress\.port 7000"):
        kubernetes_manifests(release(ingress=Ingress(host="a.example.com", port=7000)), "prod", values=VALUES,
                             allowed_host_paths=["/srv"])


@pytest.mark.parametrize("job, verdict", [
    ({"status": {"active": 1}}, PROGRESSING),
    ({"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}, COMPLETE),
    ({"status": {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}},
     FAILED),
    ({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}, PROGRESSING),
])
def test_job_verdicts(job, verdict):
    assert job_verdict(job)[0] == verdict
