"""Manual deploy to an edge node that is a docker-compose project: Debian's `docker-compose` (v1) against a
real extra Docker engine (tests/support/edge_nodes.py), with the user's own compose file.

One service is updated to the release digest (with its env-file secret) and the others are not
restarted (same container ids); a failing version restores the compose file byte for byte and the
previous version answers; blue-green on compose switches through opsflow's proxy without a failed
probe at 20 Hz (the compose plans: tests/unit/tasks/test_deploy_compose.py).
"""

from __future__ import annotations

import subprocess
import uuid

import httpx
import pytest

from tests.support.edge_nodes import Prober, edge_nodes
from tests.support.net import free_port
from tests.support.web_app import push_web_app

pytestmark = [pytest.mark.stack, pytest.mark.docker]

PROJECT = """# the edge node's own project: opsflow changes the services a release names, nothing else
version: "2.4"
services:
  web:
    image: {v1}
{web_ports}  cache:
    image: {v1}
    command: ["/bin/busybox", "httpd", "-f", "-p", "{cache_port}", "-h", "/www"]
    ports: ["{cache_port}:{cache_port}"]
  worker:
    image: {v1}
    command: ["/bin/busybox", "sleep", "86400"]
"""


@pytest.fixture(scope="module")
def compose_node(stack, tmp_path_factory):
    """One edge node, the app's images on it, and a Secret block for the web service's env file."""
    from prefect.blocks.system import Secret

    from blocks import ContainerRegistry

    uid = uuid.uuid4().hex[:6]
    app, port, cache_port = f"cmp-{uid}", free_port(), free_port()
    secret = f"compose-secret-{uuid.uuid4().hex}"
    Secret(value=f"API_SECRET={secret}\n").save(f"{app}-env", overwrite=True)
    digests = push_web_app(app, port, {"v1": True, "v2": True, "bad": False}, deadline_s=4, page_prefix="cmp ",
                           component={"runtime": {"env_files": [f"{app}-env"], "env": {"MODE": "edge"}}})
    registry = ContainerRegistry.load("local-registry")
    images = {v: f"{registry.repository(f'{app}-web')}@{d}" for v, d in digests.items()}
    root = tmp_path_factory.mktemp("compose")
    with edge_nodes(1, root / "nodes", prefix=f"cmp-{uid}") as [node]:
        import docker

        client = docker.DockerClient(base_url=node.base_url, timeout=120)
        repository, digest = images["v1"].split("@")
        client.images.pull(repository, tag=digest, auth_config=registry.auth_config())
        yield {"app": app, "port": port, "cache_port": cache_port, "images": images, "node": node, "root": root,
               "client": client, "secret": secret}
        client.close()


def _project(ctx, name: str, method_ports: bool):
    """Write the node's compose file for project ``name``, `docker-compose up -d` it by hand, save its block."""
    from blocks import DockerHostTarget

    path = ctx["root"] / name / "docker-compose.yml"
    path.parent.mkdir()
    web_ports = f'    ports: ["{ctx["port"]}:{ctx["port"]}"]\n' if method_ports else ""
    path.write_text(PROJECT.format(v1=ctx["images"]["v1"], web_ports=web_ports, cache_port=ctx["cache_port"]))
    node = ctx["node"]
    block = DockerHostTarget(name=f"{node.name}-{name}", base_url=node.base_url, public_host=node.public_host,
                             network_mode="bridge", compose_project=name, compose_file=str(path),
                             compose_root=str(ctx["root"] / "opsflow"), compose_command=["docker-compose"])
    block.save(block.name, overwrite=True)
    subprocess.run(["docker-compose", "-H", node.base_url, "-p", name, "-f", str(path), "up", "-d"], check=True,
                   capture_output=True)
    return block, path


def _ids(ctx, project: str) -> dict[str, str]:
    found = ctx["client"].containers.list(filters={"label": f"com.docker.compose.project={project}"})
    return {c.labels["com.docker.compose.service"]: c.id for c in found}


def test_one_service_is_updated_the_others_keep_running_and_a_failure_restores_the_file(compose_node):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.manual_deploy import manual_deploy
    from opsflow.core.errors import DeployFailed

    ctx = compose_node
    app, node = ctx["app"], ctx["node"]
    project = f"shop{uuid.uuid4().hex[:4]}"
    block, path = _project(ctx, project, method_ports=True)
    url = f"http://{node.public_host}:{ctx['port']}/index.html"
    before = _ids(ctx, project)
    assert set(before) == {"web", "cache", "worker"}

    done = manual_deploy(app=app, version="v2", targets=[block.name])
    assert "healthy" in done["targets"][block.name]["components"][0]["health"]
    assert httpx.get(url, timeout=5).text.strip() == "cmp v2"
    after = _ids(ctx, project)
    assert after["cache"] == before["cache"] and after["worker"] == before["worker"]  # not restarted
    assert after["web"] != before["web"]
    text = path.read_text()
    assert f"image: {ctx['images']['v2']}" in text and ctx["secret"] not in text
    web = ctx["client"].containers.get(after["web"])
    assert f"API_SECRET={ctx['secret']}" in web.attrs["Config"]["Env"] and "MODE=edge" in web.attrs["Config"]["Env"]
    with get_client(sync_client=True) as client:
        [plan] = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=[f"deploy-plan-{app}-{block.name}"])), limit=1)
    assert f"+    image: {ctx['images']['v2']}" in plan.data and ctx["secret"] not in plan.data

    with pytest.raises(DeployFailed, match=r"not healthy within 4s.*compose file is back as it was.*"
                                           r"web answers again"):
        manual_deploy(app=app, version="bad", targets=[block.name])
    assert path.read_text() == text  # byte for byte, the user's comment included
    assert httpx.get(url, timeout=5).text.strip() == "cmp v2"
    restored = _ids(ctx, project)
    assert restored["cache"] == before["cache"] and restored["worker"] == before["worker"]
    assert ctx["client"].containers.get(restored["web"]).labels["org.opsflow.version"] == "v2"
    subprocess.run(["docker-compose", "-H", node.base_url, "-p", project, "-f", str(path), "down"], check=True,
                   capture_output=True)


def test_blue_green_on_a_compose_project_fails_no_probe(compose_node):
    from flows.manual_deploy import manual_deploy
    from opsflow.core.errors import DeployFailed

    ctx = compose_node
    app, node = ctx["app"], ctx["node"]
    project = f"bg{uuid.uuid4().hex[:4]}"
    block, path = _project(ctx, project, method_ports=False)  # the proxy publishes the port
    url = f"http://{node.public_host}:{ctx['port']}/index.html"
    before = _ids(ctx, project)
    manual_deploy(app=app, version="v2", targets=[block.name], method="blue-green")  # starts the proxy
    assert httpx.get(url, timeout=5).text.strip() == "cmp v2"
    with Prober(url) as prober:
        done = manual_deploy(app=app, version="v1", targets=[block.name], method="blue-green")
        with pytest.raises(DeployFailed, match=r"not healthy within 4s.*the live containers kept serving"):
            manual_deploy(app=app, version="bad", targets=[block.name], method="blue-green")
    assert "switched with no gap" in done["targets"][block.name]["components"][0]["health"]
    assert prober.failed == [], f"failed probes: {prober.failed[:5]} of {len(prober.failed)}"
    assert prober.seen[-1] == "cmp v1" and "cmp v2" in prober.seen
    after = _ids(ctx, project)
    assert after["cache"] == before["cache"] and after["worker"] == before["worker"]
    assert f"image: {ctx['images']['v1']}" in path.read_text()
    webs = ctx["client"].containers.list(all=True, filters={"label": [f"com.docker.compose.project={project}",
                                                                       "com.docker.compose.service=web"]})
    assert [c.labels["org.opsflow.version"] for c in webs] == ["v1"]  # one container, nothing failed left behind
