"""build_image on the real engine: labels arrive verbatim, the Dockerfile stays out of the image, a registry that is
down is named (what fails before the engine: tests/unit/tasks/test_images.py)."""

from __future__ import annotations

import pytest

from tasks.images.base import prepare_busybox_context
from tasks.images.build import build_image

pytestmark = [pytest.mark.stack, pytest.mark.docker]


@pytest.fixture
def engine(stack):
    from blocks import DockerHostTarget

    return DockerHostTarget.load("build-server")


def test_labels_are_kept_verbatim_and_the_generated_dockerfile_is_not_copied(engine, docker_client):
    context = prepare_busybox_context.fn('COPY . /ctx\nCMD ["/bin/ls", "-a", "/ctx"]\n', files={"hello.txt": "hi\n"})
    (context / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
    tricky = 'a "quoted" $HOME \\ value'
    built = build_image.fn(engine, context, "opsflow-test/labels", ["t1", "t2"], revision="abc", source="file:///x",
                           labels={"dev.opsflow.test": tricky})
    image = docker_client.images.get(built.image_id)
    try:
        assert image.labels["dev.opsflow.test"] == tricky
        assert image.labels["org.opencontainers.image.revision"] == "abc"
        assert {"opsflow-test/labels:t1", "opsflow-test/labels:t2"} <= set(image.tags)
        listing = docker_client.containers.run(built.image_id, remove=True).decode().split()
        assert "hello.txt" in listing and not [n for n in listing if "ockerfile" in n or n == ".dockerignore"]
    finally:
        docker_client.images.remove(built.image_id, force=True)


def test_a_registry_that_is_down_is_retried_then_fails_naming_it(engine, docker_client):
    from prefect import flow
    from prefect.client.orchestration import get_client

    from blocks import ContainerRegistry
    from tasks.images.push import push_image
    from tasks.registry.lookup import lookup_image
    from tests.support.net import free_port

    port = free_port()  # nothing listens there
    down = ContainerRegistry(url=f"http://127.0.0.1:{port}", timeout=2)
    context = prepare_busybox_context.fn()
    built = build_image.fn(engine, context, f"127.0.0.1:{port}/opsflow-test/down", ["t1"], revision="r", source="s")

    @flow
    def push_to_a_dead_registry() -> dict:
        state = push_image.with_options(retry_delay_seconds=0)(engine, down, built, return_state=True)
        return {"failed": state.is_failed(), "message": str(state.result(raise_on_failure=False)),
                "task_run_id": state.state_details.task_run_id}

    try:
        outcome = push_to_a_dead_registry()
        assert outcome["failed"]
        assert f"127.0.0.1:{port}" in outcome["message"] and "push of" in outcome["message"]
        with get_client(sync_client=True) as client:
            assert client.read_task_run(outcome["task_run_id"]).run_count == 4  # 1 try + 3 retries
        with pytest.raises(Exception, match=f"127.0.0.1:{port}.*after 2 attempts"):
            lookup_image.fn(down, f"127.0.0.1:{port}/opsflow-test/down", "t1", attempts=2)
    finally:
        docker_client.images.remove(built.image_id, force=True)
