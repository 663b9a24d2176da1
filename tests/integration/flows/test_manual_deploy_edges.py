"""Manual deploy to edge nodes: real extra Docker engines with bridge networking (tests/support/edge_nodes.py).

Fan-out to several nodes with one unreachable, the per-target lock, rolling with surge behind the
proxy where no failure point (image missing, cannot be created, exits at once, never healthy) fails
a single probe at 20 Hz, blue-green, a backend that is healthy only with its runtime configuration and
secrets (which appear in no log, artifact, plan or label), one image in two roles.

Compose-project edge nodes: Debian's `docker-compose` (v1) against one of the engines, with the user's
own compose file. One service is updated to the release digest (with its env-file secret) and the
others are not restarted (same container ids); a failing version restores the compose file byte for
byte and the previous version answers; blue-green on compose switches through opsflow's proxy
without a failed probe (the compose plans: tests/unit/tasks/test_deploy_compose.py).
"""

from __future__ import annotations

import logging
import subprocess
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
    """An application ``web`` on port P with versions v1, v2 (healthy), bad (no /healthz), exits (exits at
    once) and nocmd (no CMD: cannot be created) pushed."""
    app, port = f"edge-{uuid.uuid4().hex[:6]}", free_port()
    push_web_app(app, port, {"v1": True, "v2": True, "bad": False, "exits": "exits", "nocmd": "nocmd"},
                 deadline_s=5, page_prefix=f"{app} ")
    return app, port


def test_fan_out_deploys_every_reachable_node_and_fails_naming_the_unreachable_one(stack, edges, web_app):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from blocks import DockerHostTarget, ObjectStore
    from opsflow.core.errors import DeployFailed
    from tasks.deploy.records import record_key
    from tests.support.edge_nodes import run_deploy

    app, port = web_app
    dead = f"dead-{uuid.uuid4().hex[:6]}"
    DockerHostTarget(name=dead, base_url=f"unix:///tmp/{dead}/docker.sock", network_mode="bridge").save(dead)
    targets = [edges[0].name, dead, edges[1].name]
    failed = rf"failed on 1 of 3 targets: {dead}: Docker host {dead} .*cannot be reached"
    with pytest.raises(DeployFailed, match=failed):
        run_deploy(app=app, version="v1", targets=targets, method="rolling")
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

    from tests.support.edge_nodes import run_deploy

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
        run_deploy(app=app, version="v2", targets=[node.name], method="rolling", return_state=True)))
    waiting = threading.Event()

    class Watch(logging.Handler):  # the deploy runs in this process: its run logger says when it waits
        def emit(self, record: logging.LogRecord) -> None:
            if "another deploy holds" in record.getMessage():
                waiting.set()

    watch = Watch()
    logging.getLogger("prefect").addHandler(watch)
    try:
        with concurrency(lock, occupy=1, timeout_seconds=30, strict=True):  # another deploy holds the target
            deploy.start()
            assert waiting.wait(60), "the second deploy never said it waits for the lock"
            assert deploy.is_alive() and httpx.get(url, timeout=5).text.strip() == f"{app} v1"
    finally:
        logging.getLogger("prefect").removeHandler(watch)
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


def test_surge_rollouts_fail_no_probe_at_any_failure_point(edges, web_app, run_logger_off):
    """Bridge networking: each failure point ends with the old version answering, and a prober at 20 Hz
    never sees a failure, neither during the failed deploys nor during a good one."""
    from blocks import ContainerRegistry, DockerHostTarget
    from opsflow.core.errors import DeployFailed
    from tasks.deploy.docker_host import rollout_docker
    from tasks.deploy.plan import ComponentRelease
    from tests.support.edge_nodes import run_deploy

    app, port = web_app
    node = edges[1]
    url = f"http://{node.public_host}:{port}/index.html"
    assert httpx.get(url, timeout=5).text.strip() == f"{app} v2"  # after the lock test
    engine, registry = DockerHostTarget.load(node.name), ContainerRegistry.load("local-registry")
    missing = ComponentRelease(app=app, component="web", image=registry.repository(f"{app}-web") + "@sha256:"
                               + "0" * 64, version="gone", ports=[port], health_deadline_s=5)
    with Prober(url) as prober:
        for version, why in (("bad", r"not healthy within 5s"), ("exits", r"the container exited.*cannot start"),
                             ("nocmd", r"No command specified")):
            with pytest.raises(DeployFailed, match=rf"{why}.*removed and the live version .* kept serving"):
                run_deploy(app=app, version=version, targets=[node.name])
        with pytest.raises(DeployFailed, match="could not pull"):
            rollout_docker.fn(engine, registry, missing)
        done = run_deploy(app=app, version="v1", targets=[node.name])
        time.sleep(0.3)
    assert "started beside the old ones, no gap" in done["targets"][node.name]["components"][0]["health"]
    assert prober.failed == [], f"failed probes: {prober.failed[:5]} of {len(prober.failed)}"
    assert set(prober.seen) == {f"{app} v2", f"{app} v1"} and prober.seen[-1] == f"{app} v1"
    left = _containers(node, app)  # nothing of the failed deploys is left behind, the old v2 is gone
    assert len(left) == 2 and set(left.values()) == {("running", None), ("running", "v1")}, left


@pytest.fixture(scope="module")
def config_app(stack):
    """A backend healthy only with its env var, its env-file secret and its secret file; and a batch
    role of the same image with another command. The Secret blocks hold the values."""
    from prefect.blocks.system import Secret

    uid = uuid.uuid4().hex[:6]
    app, port = f"cfg-{uid}", free_port()
    secrets = {"db": f"db-password-{uuid.uuid4().hex}", "token": f"api-token-{uuid.uuid4().hex}"}
    Secret(value=f"DB_PASSWORD={secrets['db']}\nexport QUEUE_URL='amqp://queue.lan' # the broker\n").save(
        f"{app}-env", overwrite=True)
    Secret(value=secrets["token"]).save(f"{app}-token", overwrite=True)
    runtime = {"env": {"APP_MODE": "service-mode"}, "env_files": [f"{app}-env"], "init": True,
               "secret_files": [{"secret_block": f"{app}-token", "path": "/run/secrets/api-token", "mode": 0o400}],
               "labels": {"traefik.http.routers.cfg.rule": "Host(`cfg.example.com`)"}}
    roles = [{"name": "service"},
             {"name": "batch", "kind": "batch", "runtime": {"env": {"APP_MODE": "batch-mode"}, "args": [
                 "/bin/busybox", "sh", "-c",
                 'echo "batch ran as $APP_MODE"; [ -s /run/secrets/api-token ] && [ -n "$DB_PASSWORD" ]']}}]
    push_web_app(app, port, {"v1": "needs-config"}, deadline_s=10, page_prefix="cfg ",
                 component={"runtime": runtime, "roles": roles})
    return app, port, secrets


def test_runtime_config_and_secrets_make_the_backend_healthy_and_never_show(edges, config_app):
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    from tests.support.edge_nodes import run_deploy

    app, port, secrets = config_app
    node = edges[1]
    state = run_deploy(app=app, version="v1", targets=[node.name], return_state=True)
    done = state.result()
    service, batch = done["targets"][node.name]["components"]
    assert service["component"] == "web" and "healthy" in service["health"]
    assert batch["component"] == "web/batch" and batch["health"].startswith("ran to completion (exit 0)")
    assert httpx.get(f"http://{node.public_host}:{port}/index.html", timeout=5).text.strip() == "cfg v1"

    import docker

    client = docker.DockerClient(base_url=node.base_url)
    try:
        containers = client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"})
        by_role = {c.labels["org.opsflow.run-role"]: c for c in containers
                   if c.labels.get("org.opsflow.role") != "proxy"}
        run = by_role["batch"]
        assert run.name == f"{app}-web-batch-run" and run.attrs["State"]["ExitCode"] == 0
        assert run.logs().decode().strip() == "batch ran as batch-mode"  # same image, another command
        assert by_role["service"].attrs["Config"]["Cmd"] != run.attrs["Config"]["Cmd"]
        served = by_role["service"]
        assert served.attrs["HostConfig"]["Init"] is True
        code, out = served.exec_run(["/bin/busybox", "stat", "-c", "%a", "/run/secrets/api-token"])
        assert (code, out.decode().strip()) == (0, "400")
        inspected = json.dumps([c.attrs for c in containers])
        assert secrets["token"] not in inspected  # the secret file: not in inspect, labels or env
        assert secrets["db"] not in json.dumps([c.labels for c in containers])
        assert f"DB_PASSWORD={secrets['db']}" in served.attrs["Config"]["Env"]  # env values are (documented)
        assert "QUEUE_URL=amqp://queue.lan" in served.attrs["Config"]["Env"]
        images = json.dumps([client.images.get(c.attrs["Image"]).attrs for c in containers])
        assert secrets["token"] not in images and secrets["db"] not in images
    finally:
        client.close()
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as prefect:
        logs = prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        artifacts = prefect.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[run_id])))
        flow_run = prefect.read_flow_run(run_id)
    plan = next(a.data for a in artifacts if a.key == f"deploy-plan-{app}-{node.name}")
    assert "DB_PASSWORD" in plan and "<secret" in plan and "sha256:" in plan and "/run/secrets/api-token" in plan
    everything = json.dumps([[log.message for log in logs], [a.data for a in artifacts], flow_run.state.message,
                             done], default=str)
    for value in secrets.values():
        assert value not in everything


def test_blue_green_switches_without_a_failed_probe_and_a_bad_colour_never_serves(edges, web_app):
    from opsflow.core.errors import DeployFailed
    from tests.support.edge_nodes import run_deploy

    app, port = web_app
    node = edges[0]
    url = f"http://{node.public_host}:{port}/index.html"
    # the fan-out's rolling deploy left v1 as blue behind the proxy: the next colour is green
    with Prober(url) as prober:
        done = run_deploy(app=app, version="v2", targets=[node.name], method="blue-green")
        time.sleep(0.3)
    assert "green is live" in done["targets"][node.name]["components"][0]["health"]
    assert prober.failed == [], f"failed probes during the switch: {prober.failed[:5]}"
    assert prober.seen[-1] == f"{app} v2" and f"{app} v1" in prober.seen
    assert _containers(node, app) == {f"{app}-web-proxy": ("running", None), f"{app}-web-green-0": ("running", "v2"),
                                      f"{app}-web-blue-0": ("exited", "v1")}  # blue stopped, kept until the next deploy

    with Prober(url) as prober, pytest.raises(DeployFailed, match=r"not healthy within 5s.*green\) kept serving"):
        run_deploy(app=app, version="bad", targets=[node.name], method="blue-green")
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
def compose_node(edges, tmp_path_factory):
    """A compose project's node (the second edge node: its engine has opsflow's base images already),
    the app's images on it, and a Secret block for the web service's env file."""
    import docker
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
    node = edges[1]
    client = docker.DockerClient(base_url=node.base_url, timeout=120)
    repository, digest = images["v1"].split("@")
    client.images.pull(repository, tag=digest, auth_config=registry.auth_config())
    yield {"app": app, "port": port, "cache_port": cache_port, "images": images, "node": node,
           "root": tmp_path_factory.mktemp("compose"), "client": client, "secret": secret}
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

    from opsflow.core.errors import DeployFailed
    from tests.support.edge_nodes import run_deploy

    ctx = compose_node
    app, node = ctx["app"], ctx["node"]
    project = f"shop{uuid.uuid4().hex[:4]}"
    block, path = _project(ctx, project, method_ports=True)
    url = f"http://{node.public_host}:{ctx['port']}/index.html"
    before = _ids(ctx, project)
    assert set(before) == {"web", "cache", "worker"}

    done = run_deploy(app=app, version="v2", targets=[block.name])
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
        run_deploy(app=app, version="bad", targets=[block.name])
    assert path.read_text() == text  # byte for byte, the user's comment included
    assert httpx.get(url, timeout=5).text.strip() == "cmp v2"
    restored = _ids(ctx, project)
    assert restored["cache"] == before["cache"] and restored["worker"] == before["worker"]
    assert ctx["client"].containers.get(restored["web"]).labels["org.opsflow.version"] == "v2"
    subprocess.run(["docker-compose", "-H", node.base_url, "-p", project, "-f", str(path), "down"], check=True,
                   capture_output=True)


def test_blue_green_on_a_compose_project_fails_no_probe(compose_node):
    from opsflow.core.errors import DeployFailed
    from tests.support.edge_nodes import run_deploy

    ctx = compose_node
    app, node = ctx["app"], ctx["node"]
    project = f"bg{uuid.uuid4().hex[:4]}"
    block, path = _project(ctx, project, method_ports=False)  # the proxy publishes the port
    url = f"http://{node.public_host}:{ctx['port']}/index.html"
    before = _ids(ctx, project)
    run_deploy(app=app, version="v2", targets=[block.name], method="blue-green")  # starts the proxy
    assert httpx.get(url, timeout=5).text.strip() == "cmp v2"
    with Prober(url) as prober:
        done = run_deploy(app=app, version="v1", targets=[block.name], method="blue-green")
        with pytest.raises(DeployFailed, match=r"not healthy within 4s.*the live containers kept serving"):
            run_deploy(app=app, version="bad", targets=[block.name], method="blue-green")
    assert "switched with no gap" in done["targets"][block.name]["components"][0]["health"]
    assert prober.failed == [], f"failed probes: {prober.failed[:5]} of {len(prober.failed)}"
    assert prober.seen[-1] == "cmp v1" and "cmp v2" in prober.seen
    after = _ids(ctx, project)
    assert after["cache"] == before["cache"] and after["worker"] == before["worker"]
    assert f"image: {ctx['images']['v1']}" in path.read_text()
    webs = ctx["client"].containers.list(all=True, filters={"label": [f"com.docker.compose.project={project}",
                                                                       "com.docker.compose.service=web"]})
    assert [c.labels["org.opsflow.version"] for c in webs] == ["v1"]  # one container, nothing failed left behind
