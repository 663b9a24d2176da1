"""Manual deploy to a Docker host with host networking (the stack's engine, as a block with network_mode=host):
the old container must stop before the new one starts there, so every failure point of a rolling
deploy (image missing, container cannot be created, exits at once, never healthy) must end with the
previous version answering again, its outage bounded; limits the engine refuses and bad input are
rejected before anything stops (the plans: tests/unit/flows/test_manual_deploy.py)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.support.edge_nodes import Prober
from tests.support.net import free_port
from tests.support.web_app import push_web_app

pytestmark = [pytest.mark.stack, pytest.mark.docker]
DEADLINE_S = 3
HOST = "edge-local-host"


@pytest.fixture(scope="module")
def host_app(stack, docker_url):
    """One application with v1, v3 (healthy), v2 (never healthy), exits, nocmd pushed, and the stack's
    engine as a host-networked target ``HOST``."""
    from blocks import DockerHostTarget

    DockerHostTarget(name=HOST, base_url=docker_url, network_mode="host").save(HOST, overwrite=True)
    app, port = f"dep-{uuid.uuid4().hex[:6]}", free_port()
    digests = push_web_app(app, port, {"v1": True, "v2": False, "v3": True, "exits": "exits", "nocmd": "nocmd"},
                           deadline_s=DEADLINE_S, page_prefix="shop ")
    return app, port, digests


def _serving(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/index.html", timeout=5).text.strip()


def _running(docker_client, app: str) -> dict[str, str]:
    return {c.name: c.labels["org.opsflow.version"]
            for c in docker_client.containers.list(filters={"label": f"org.opsflow.app={app}"})}


def test_every_failure_point_ends_with_the_previous_version_answering(stack, docker_client, host_app, run_logger_off):
    from blocks import ContainerRegistry, DockerHostTarget, ObjectStore
    from opsflow.core.errors import DeployFailed
    from tasks.deploy.docker_host import rollout_docker
    from tasks.deploy.plan import ComponentRelease
    from tasks.deploy.records import DeployRecord, record_key
    from tests.support.edge_nodes import run_deploy

    app, port, digests = host_app
    store = ObjectStore.load("opsflow-artifacts")
    try:
        first = run_deploy(app=app, version="v1", targets=[HOST])
        assert first["targets"][HOST]["components"][0]["image"].endswith(digests["v1"])
        assert _serving(port) == "shop v1"

        # never healthy: the gap lasts the health deadline, then the old version is back
        with Prober(f"http://127.0.0.1:{port}/index.html") as prober, pytest.raises(
                DeployFailed, match=r"not healthy within 3s.*rolled back; the previous version .* is serving again"):
            run_deploy(app=app, version="v2", targets=[HOST])
        assert _serving(port) == "shop v1" and prober.seen[-1] == "shop v1"
        assert len(prober.failed) <= (DEADLINE_S + 3) * 20, len(prober.failed)  # a gap: host networking

        # exits at once: noticed at once (not after the deadline), the old version is back
        with Prober(f"http://127.0.0.1:{port}/index.html") as prober, pytest.raises(
                DeployFailed, match=r"the container exited.*cannot start.*previous version .* is serving again"):
            run_deploy(app=app, version="exits", targets=[HOST])
        assert _serving(port) == "shop v1" and len(prober.failed) <= (DEADLINE_S + 3) * 20

        # the engine refuses to create the container (issue 18: it used to leave the app down)
        with pytest.raises(DeployFailed, match=r"No command specified.*previous version .* is serving again"):
            run_deploy(app=app, version="nocmd", targets=[HOST])
        assert _serving(port) == "shop v1"

        # the image cannot be pulled: nothing stopped at all
        engine, registry = DockerHostTarget.load(HOST), ContainerRegistry.load("local-registry")
        missing = ComponentRelease(app=app, component="web", image=registry.repository(f"{app}-web") + "@sha256:"
                                   + "0" * 64, version="gone", ports=[port], health_deadline_s=DEADLINE_S)
        with pytest.raises(DeployFailed, match=r"could not pull .* the running version was not touched"):
            rollout_docker.fn(engine, registry, missing)
        assert _serving(port) == "shop v1"
        assert _running(docker_client, app) == {f"{app}-web-0": "v1"}  # no -previous left behind

        run_deploy(app=app, version="v3", targets=[HOST])
        assert _serving(port) == "shop v3"
        body = store.get_client().get_object(Bucket=store.bucket, Key=record_key(app, HOST))["Body"].read()
        record = DeployRecord.model_validate_json(body)
        assert [i.digest for i in record.images] == [digests["v3"]]
        assert [i.digest for i in record.previous] == [digests["v1"]]
    finally:
        store.get_client().delete_object(Bucket=store.bucket, Key=record_key(app, HOST))


def test_a_deploy_from_the_token_auth_registry_pulls_with_the_blocks_login(stack, token_registry, docker_client,
                                                                            docker_url):
    """The image is resolved (token flow, the block's CA) and pulled by the edge engine with the block's login."""
    from blocks import DockerHostTarget, ObjectStore
    from tasks.deploy.records import record_key
    from tests.support.edge_nodes import run_deploy

    DockerHostTarget(name=HOST, base_url=docker_url, network_mode="host").save(HOST, overwrite=True)
    uid = uuid.uuid4().hex[:6]
    app, port = f"tok-{uid}", free_port()
    digests = push_web_app(app, port, {"v1": True}, deadline_s=20, page_prefix="token ",
                           registry_block="token-registry")
    image = f"{token_registry.netloc}/{app}-web@{digests['v1']}"
    try:
        docker_client.images.remove(image, force=True)  # the build engine is the edge engine here: pull it anew
        done = run_deploy(app=app, version="v1", targets=[HOST], registry_block="token-registry")
        assert done["targets"][HOST]["components"][0]["image"] == image
        assert httpx.get(f"http://127.0.0.1:{port}/index.html", timeout=5).text.strip() == "token v1"
    finally:
        for container in docker_client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"}):
            container.remove(force=True)
        store = ObjectStore.load("opsflow-artifacts")
        store.get_client().delete_object(Bucket=store.bucket, Key=record_key(app, HOST))


def test_limits_the_engine_refuses_and_bad_input_change_nothing(stack, docker_client, host_app):
    from blocks import Application, ObjectStore
    from opsflow.core.errors import InvalidInput
    from tasks.deploy.records import record_key
    from tests.support.edge_nodes import run_deploy

    app, port, _ = host_app
    run_deploy(app=app, version="v1", targets=[HOST])
    before = {c.name: c.id for c in docker_client.containers.list(filters={"label": f"org.opsflow.app={app}"})}
    bad_runtime = Application.load(app)
    bad_runtime.components[0].runtime.env_files = ["no-such-secret"]
    bad_runtime.components[0].runtime.volumes = [{"source": "/etc", "target": "/host-etc"}]
    bad_runtime.save(f"{app}-bad", overwrite=True)
    cases = [
        # issue 18: each of these failed at container create and left the app down; issue 21: KeyError 'Pi'
        (dict(cpu="1m", memory="1k"), ("cpu 1m is below the engine's minimum of 10m",
                                       "components[web].memory 1k is below the engine's minimum of 6Mi")),
        (dict(cpu="64", memory="1Pi"), (f"cpu 64 is more than {HOST} has", f"memory 1Pi is more than {HOST} has")),
        (dict(roles=["batch"]), "has the role(s) ['batch']"),
        (dict(targets=["no-such-node"]), "no docker target block named 'no-such-node'"),
        (dict(targets=[HOST, HOST]), "lists a target twice"),
        (dict(method="blue-green"), f"target {HOST} uses network_mode=host"),
        (dict(version="v9"), "v9 is not in the registry"),
        (dict(components=["db"]), "has no component"),
        (dict(app=f"{app}-bad"), "env_files[0] (no-such-secret): there is no readable Secret block"),
    ]
    for kwargs, messages in cases:
        with pytest.raises(InvalidInput) as info:
            run_deploy(**{"app": app, "version": "v1", "targets": [HOST], **kwargs})
        for message in [messages] if isinstance(messages, str) else messages:
            assert message in str(info.value), (kwargs, str(info.value))
    for kwargs, field in [(dict(replicas=-1), "replicas"), (dict(memory="12XB"), "memory"),
                          (dict(app="shop;rm -rf /"), "app"), (dict(version="v1$(reboot)"), "version"),
                          (dict(env={"1BAD": "x"}), "env")]:
        with pytest.raises(Exception, match=field):
            run_deploy(**{"app": app, "version": "v1", "targets": [HOST], **kwargs})
    assert {c.name: c.id for c in docker_client.containers.list(
        filters={"label": f"org.opsflow.app={app}"})} == before  # nothing was stopped or replaced
    assert _serving(port) == "shop v1"
    store = ObjectStore.load("opsflow-artifacts")
    s3 = store.get_client()
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=store.bucket, Key=record_key(f"{app}-bad", HOST))


def test_replicas_zero_says_what_it_does_and_records_the_truth(stack, docker_client, host_app):
    """Issue 21: replicas 0 reported "deployed" while the old version served, and recorded the new one."""
    from blocks import ObjectStore
    from tasks.deploy.records import DeployRecord, record_key
    from tests.support.edge_nodes import run_deploy

    app, port, digests = host_app
    store = ObjectStore.load("opsflow-artifacts")
    try:
        run_deploy(app=app, version="v1", targets=[HOST])
        done = run_deploy(app=app, version="v3", targets=[HOST], replicas=0)
        [result] = done["targets"][HOST]["components"]
        assert result["replicas"] == 0 and result["health"].startswith("scaled to 0: removed 1 container(s)")
        assert f"nothing of web runs on {HOST} now" in result["health"]
        assert _running(docker_client, app) == {}
        with pytest.raises(httpx.HTTPError):
            _serving(port)
        body = store.get_client().get_object(Bucket=store.bucket, Key=record_key(app, HOST))["Body"].read()
        record = DeployRecord.model_validate_json(body)
        assert [(i.digest, i.replicas) for i in record.images] == [(digests["v3"], 0)]
        assert [i.digest for i in record.previous] == [digests["v1"]]
    finally:
        for container in docker_client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"}):
            container.remove(force=True)
        store.get_client().delete_object(Bucket=store.bucket, Key=record_key(app, HOST))


def test_the_stacks_edge_node_deploys_blue_green_out_of_the_box(stack, docker_client, host_app):
    """`edge-local` (the stack's engine, started with --bridge=none) deploys onto opsflow's own bridge
    networks: blue-green switches there without a failed probe (issue 18: `network bridge not found`)."""
    from tests.support.edge_nodes import run_deploy

    app, port, _ = host_app
    for container in docker_client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"}):
        container.remove(force=True)  # the host-networked tests' containers hold the port
    try:
        run_deploy(app=app, version="v1", targets=["edge-local"], method="blue-green")
        with Prober(f"http://127.0.0.1:{port}/index.html") as prober:
            done = run_deploy(app=app, version="v3", targets=["edge-local"], method="blue-green")
        assert "is live" in done["targets"]["edge-local"]["components"][0]["health"]
        assert prober.failed == [] and prober.seen[-1] == "shop v3", prober.failed[:5]
    finally:
        for container in docker_client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"}):
            container.remove(force=True)
