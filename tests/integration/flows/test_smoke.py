"""The smoke flow: a busybox image built by the build server's engine, pushed, pulled back and run."""

from __future__ import annotations

import time

import pytest

from blocks import ContainerRegistry
from flows.smoke import smoke_image
from opsflow.registry.v2 import MANIFEST_TYPES

pytestmark = [pytest.mark.stack, pytest.mark.docker]


def test_smoke_pushes_an_image_the_registry_serves_by_digest_and_the_engine_runs(stack, docker_client):
    tag = f"t{int(time.time())}"
    result = smoke_image(tag=tag)
    digest, ref = result["digest"], result["ref"]
    registry = ContainerRegistry.load("local-registry")
    with registry.get_client() as client:  # the registry's login and CA
        resp = client.head(f"/v2/opsflow/smoke/manifests/{tag}", headers={"Accept": MANIFEST_TYPES}, timeout=10)
    assert resp.status_code == 200 and resp.headers["Docker-Content-Digest"] == digest
    docker_client.images.remove(f"{result['repository']}:{tag}", force=True)
    pulled = docker_client.images.pull(ref, auth_config=registry.auth_config())
    assert digest in "".join(pulled.attrs["RepoDigests"])
    assert pulled.labels["org.opencontainers.image.source"] == "opsflow:flows/smoke.py"
    assert docker_client.containers.run(ref, remove=True).decode() == f"hello from opsflow smoke image {tag}\n"
