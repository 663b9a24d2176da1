"""Manual deploy plans: the scripts, manifests and container specs a deploy would apply (the deploy to
a Docker host: tests/integration/flows/test_manual_deploy.py)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tasks.deploy.k8s_manifests import kubernetes_manifests
from tasks.deploy.plan import ComponentRelease, bash_script, powershell_script

IMAGE = "127.0.0.1:5000/shop-web@sha256:" + "a" * 64


def test_plans_quote_values_and_carry_health_resources_and_deadline():
    rel = ComponentRelease(app="shop", component="web", image=IMAGE, version="v1.2", replicas=3, cpu="500m",
                           memory="128Mi", ports=[8081], health_path="/healthz", health_deadline_s=45)
    script = bash_script(rel)
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert f"image={IMAGE}" in script and "--memory 134217728" in script and "rolling back" in script
    ps = powershell_script(rel)
    assert f"$image = '{IMAGE}'" in ps and "$deadline = 45" in ps
    deployment, service = kubernetes_manifests(rel, "prod", colour="green")
    spec = deployment["spec"]
    assert deployment["metadata"]["name"] == "shop-web-green" and spec["replicas"] == 3
    assert spec["progressDeadlineSeconds"] == 45 and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    container = spec["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8081}
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "128Mi"}
    assert service["spec"]["selector"]["opsflow.org/colour"] == "green"
    yaml.safe_dump_all([deployment, service])
    from tasks.deploy.bluegreen import colour_of
    from tasks.deploy.plan import docker_container_specs, docker_proxy_spec

    rolling = docker_container_specs(rel, "bridge")
    assert [c["name"] for c in rolling] == ["shop-web-0"] and rolling[0]["ports"] == {"8081/tcp": 8081}
    green = docker_container_specs(rel, "bridge", colour="green")
    assert [c["name"] for c in green] == ["shop-web-green-0", "shop-web-green-1", "shop-web-green-2"]
    assert {c["network"] for c in green} == {"opsflow-shop"} and all(c["ports"] is None for c in green)
    assert green[0]["labels"]["org.opsflow.colour"] == "green" and green[0]["mem_limit"] == 128 * 2**20
    proxy = docker_proxy_spec(rel, "opsflow/bluegreen-proxy:x")
    assert proxy["ports"] == {"8081/tcp": 8081} and proxy["environment"] == {"OPSFLOW_PROXY_PORTS": "8081"}
    assert [colour_of(n, "shop-web") for n in ("shop-web-green-1", "shop-web-blue-0", "shop-web-0")] == [
        "green", "blue", None]
    with pytest.raises(ValueError):
        ComponentRelease(app="shop", component="web", image="x; rm -rf /", version="v1")
    with pytest.raises(ValueError):
        ComponentRelease(app="shop", component="web", image=IMAGE, version="$(reboot)")
