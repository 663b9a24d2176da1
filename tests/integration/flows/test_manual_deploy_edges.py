"""Manual deploy to edge nodes: real extra Docker engines with bridge networking (tests/support/edge_nodes.py).

Blue-green behind the proxy with a prober every 50 ms, fan-out to several nodes with one
unreachable, the per-target lock, and bad input rejected before any target is touched.
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from tests.support.edge_nodes import Prober, edge_nodes
from tests.support.net import free_port
from tests.support.web_app import push_web_app

pytestmark = [pytest.mark.stack, pytest.mark.docker]


@pytest.fixture(scope="module")
def edges(stack, tmp_path_factory):
    """Two edge nodes, saved as Docker host target blocks."""
    from blocks import DockerHostTarget

    uid = uuid.uuid4().hex[:6]
    with edge_nodes(2, tmp_path_factory.mktemp("edges"), prefix=f"edge-{uid}") as nodes:
        for node in nodes:
            DockerHostTarget(name=node.name, base_url=node.base_url, public_host=node.public_host,
                             network_mode="bridge").save(node.name, overwrite=True)
        yield nodes


@pytest.fixture(scope="module")
def web_app(stack):
    """An application ``web`` on port P with versions v1, v2 (healthy) and bad (no /healthz) pushed."""
    app, port = f"edge-{uuid.uuid4().hex[:6]}", free_port()
    push_web_app(app, port, {"v1": True, "v2": True, "bad": False}, deadline_s=5, page_prefix=f"{app} ")
    return app, port


def test_fan_out_deploys_every_reachable_node_and_fails_naming_the_unreachable_one(stack, edges, web_app):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from blocks import DockerHostTarget, ObjectStore
    from flows.manual_deploy import manual_deploy
    from opsflow.core.errors import DeployFailed
    from tasks.deploy.records import record_key

    app, port = web_app
    dead = f"dead-{uuid.uuid4().hex[:6]}"
    DockerHostTarget(name=dead, base_url=f"unix:///tmp/{dead}/docker.sock", network_mode="bridge").save(dead)
    targets = [edges[0].name, dead, edges[1].name]
    failed = rf"failed on 1 of 3 targets: {dead}: Docker host {dead} .*cannot be reached"
    with pytest.raises(DeployFailed, match=failed):
        manual_deploy(app=app, version="v1", targets=targets, method="rolling")
    for node in edges:  # the unreachable node stopped neither of the others
        assert httpx.get(f"http://{node.public_host}:{port}/index.html", timeout=5).text.strip() == f"{app} v1"
    store = ObjectStore.load("opsflow-artifacts")
    s3 = store.get_client()
    for node in edges:
        assert s3.get_object(Bucket=store.bucket, Key=record_key(app, node.name))["Body"].read()
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=store.bucket, Key=record_key(app, dead))
    with get_client(sync_client=True) as client:
        artifact = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"deploy-{app}-results"])), limit=1)[0]
    rows = {row["target"]: row for row in _table(artifact.data)}
    assert rows[dead]["result"] == "FAILED" and "cannot be reached" in rows[dead]["detail"]
    assert {rows[n.name]["result"] for n in edges} == {"deployed"}


def test_a_second_deploy_to_the_same_target_waits_for_the_first(stack, edges, web_app):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists

    from flows.manual_deploy import manual_deploy

    app, port = web_app
    node = edges[1]
    lock = f"deploy-{app}-{node.name}"
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=lock, limit=1))
        except ObjectAlreadyExists:
            pass
    url = f"http://{node.public_host}:{port}/index.html"
    states = []
    deploy = threading.Thread(target=lambda: states.append(
        manual_deploy(app=app, version="v2", targets=[node.name], method="rolling", return_state=True)))
    with concurrency(lock, occupy=1, timeout_seconds=30, strict=True):  # another deploy holds the target
        deploy.start()
        time.sleep(6)
        assert deploy.is_alive() and httpx.get(url, timeout=5).text.strip() == f"{app} v1"
    deploy.join(120)
    assert states and states[0].is_completed(), states
    assert httpx.get(url, timeout=5).text.strip() == f"{app} v2"
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 20
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[states[0].state_details.flow_run_id])))
            if any("another deploy holds" in log.message for log in logs) or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert any(f"another deploy holds {lock}" in log.message for log in logs)


def test_blue_green_switches_without_a_failed_probe_and_a_bad_colour_never_serves(edges, web_app):
    from flows.manual_deploy import manual_deploy
    from opsflow.core.errors import DeployFailed

    app, port = web_app
    node = edges[0]
    url = f"http://{node.public_host}:{port}/index.html"
    done = manual_deploy(app=app, version="v1", targets=[node.name], method="blue-green")
    assert "blue is live" in done["targets"][node.name]["components"][0]["health"]
    assert httpx.get(url, timeout=5).text.strip() == f"{app} v1"

    with Prober(url) as prober:
        done = manual_deploy(app=app, version="v2", targets=[node.name], method="blue-green")
        time.sleep(0.5)
    assert "green is live" in done["targets"][node.name]["components"][0]["health"]
    assert prober.failed == [], f"failed probes during the switch: {prober.failed[:5]}"
    assert prober.seen[-1] == f"{app} v2" and f"{app} v1" in prober.seen
    assert _containers(node, app) == {f"{app}-web-proxy": ("running", None), f"{app}-web-green-0": ("running", "v2"),
                                      f"{app}-web-blue-0": ("exited", "v1")}  # blue stopped, kept until the next deploy

    with Prober(url) as prober, pytest.raises(DeployFailed, match=r"not healthy within 5s.*green\) kept serving"):
        manual_deploy(app=app, version="bad", targets=[node.name], method="blue-green")
    assert prober.failed == [] and set(prober.seen) == {f"{app} v2"}

    state = _containers(node, app)
    # green (v2) serves; the failed blue is gone (the stopped v1 blue made room for it)
    assert state == {f"{app}-web-proxy": ("running", None), f"{app}-web-green-0": ("running", "v2")}


def _containers(node, app: str) -> dict[str, tuple[str, str | None]]:
    import docker

    client = docker.DockerClient(base_url=node.base_url)
    try:
        return {c.name: (c.status, c.labels.get("org.opsflow.version"))
                for c in client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"})}
    finally:
        client.close()


def _table(data) -> list[dict]:
    import json

    return json.loads(data) if isinstance(data, str) else data
