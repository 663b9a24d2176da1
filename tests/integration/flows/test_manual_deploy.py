"""Manual deploy to a Docker host (the stack's engine as edge node): rollout, rollback (the plans:
tests/unit/flows/test_manual_deploy.py)."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.support.net import free_port
from tests.support.web_app import push_web_app


@pytest.mark.stack
@pytest.mark.docker
def test_rollout_then_failed_deploy_rolls_back_and_the_old_version_serves(stack, docker_client):
    from blocks import ObjectStore
    from flows.manual_deploy import manual_deploy
    from opsflow.core.errors import InvalidInput
    from tasks.deploy.records import DeployRecord, record_key

    uid = uuid.uuid4().hex[:6]
    app, port = f"dep-{uid}", free_port()
    digests = push_web_app(app, port, {"v1": True, "v2": False, "v3": True}, deadline_s=6, page_prefix="shop ")
    store = ObjectStore.load("opsflow-artifacts")

    def serving() -> str:
        return httpx.get(f"http://127.0.0.1:{port}/index.html", timeout=5).text.strip()

    try:
        first = manual_deploy(app=app, version="v1", targets=["edge-local"])
        assert first["targets"]["edge-local"]["components"][0]["image"].endswith(digests["v1"])
        assert serving() == "shop v1"

        with pytest.raises(Exception, match=r"not healthy within 6s.*rolled back; the previous version .* is serving"):
            manual_deploy(app=app, version="v2", targets=["edge-local"])
        assert serving() == "shop v1"  # the old version still serves after the failed deploy
        running = docker_client.containers.list(filters={"label": f"org.opsflow.app={app}"})
        assert [c.labels["org.opsflow.version"] for c in running] == ["v1"]

        manual_deploy(app=app, version="v3", targets=["edge-local"])
        assert serving() == "shop v3"
        body = store.get_client().get_object(Bucket=store.bucket, Key=record_key(app, "edge-local"))["Body"].read()
        record = DeployRecord.model_validate_json(body)
        assert [i.digest for i in record.images] == [digests["v3"]]
        assert [i.digest for i in record.previous] == [digests["v1"]]

        with pytest.raises(InvalidInput, match="v9 is not in the registry"):
            manual_deploy(app=app, version="v9", targets=["edge-local"])
        with pytest.raises(InvalidInput, match="no component"):
            manual_deploy(app=app, version="v3", targets=["edge-local"], components=["db"])
        assert serving() == "shop v3"
    finally:
        for container in docker_client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"}):
            container.remove(force=True)
        store.get_client().delete_object(Bucket=store.bucket, Key=record_key(app, "edge-local"))


@pytest.mark.stack
@pytest.mark.docker
def test_a_deploy_from_the_token_auth_registry_pulls_with_the_blocks_login(stack, token_registry, docker_client):
    """The image is resolved (token flow, the block's CA) and pulled by the edge engine with the block's login."""
    from blocks import ObjectStore
    from flows.manual_deploy import manual_deploy
    from tasks.deploy.records import record_key

    uid = uuid.uuid4().hex[:6]
    app, port = f"tok-{uid}", free_port()
    digests = push_web_app(app, port, {"v1": True}, deadline_s=20, page_prefix="token ",
                           registry_block="token-registry")
    image = f"{token_registry.netloc}/{app}-web@{digests['v1']}"
    try:
        docker_client.images.remove(image, force=True)  # the build engine is the edge engine here: pull it anew
        done = manual_deploy(app=app, version="v1", targets=["edge-local"], registry_block="token-registry")
        assert done["targets"]["edge-local"]["components"][0]["image"] == image
        assert httpx.get(f"http://127.0.0.1:{port}/index.html", timeout=5).text.strip() == "token v1"
    finally:
        for container in docker_client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"}):
            container.remove(force=True)
        store = ObjectStore.load("opsflow-artifacts")
        store.get_client().delete_object(Bucket=store.bucket, Key=record_key(app, "edge-local"))


@pytest.mark.stack
@pytest.mark.docker
def test_bad_input_is_rejected_before_any_target_is_touched(stack, docker_client):
    from blocks import Application, Component, ObjectStore
    from flows.manual_deploy import manual_deploy
    from opsflow.core.errors import InvalidInput
    from tasks.deploy.records import record_key

    app = f"bad-{uuid.uuid4().hex[:6]}"
    Application(name=app, repository="file:///nowhere/bad.git",
                components=[Component(name="web", ports=[free_port()])]).save(app)
    cases = [
        (dict(app="no-such-app"), InvalidInput, "no application block named 'no-such-app'"),
        (dict(app=app, targets=["no-such-node"]), InvalidInput, "no docker target block named 'no-such-node'"),
        (dict(app=app, targets=["edge-local", "edge-local"]), InvalidInput, "lists a target twice"),
        (dict(app=app, method="blue-green"), InvalidInput, "target edge-local uses network_mode=host"),
        (dict(app=app), InvalidInput, "is not in the registry"),  # v1 was never pushed for this app
        (dict(app=app, replicas=-1), Exception, "replicas"),
        (dict(app=app, memory="12XB"), Exception, "memory"),
        (dict(app="shop;rm -rf /"), Exception, "app"),
        (dict(app=app, version="v1$(reboot)"), Exception, "version"),
        (dict(app=app, cpu="-1"), Exception, "cpu"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            manual_deploy(**{"version": "v1", **kwargs})
    assert docker_client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"}) == []
    store = ObjectStore.load("opsflow-artifacts")
    s3 = store.get_client()
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=store.bucket, Key=record_key(app, "edge-local"))
