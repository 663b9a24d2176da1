"""`opsflow demo`: the smoke flow runs as a deployment on the vault-build worker and pushes an image."""

from __future__ import annotations

import httpx
import pytest

from opsflow.demo import run_demo

pytestmark = [pytest.mark.stack, pytest.mark.docker]

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


@pytest.fixture(scope="module")
def demo(stack):
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = run_demo(stack)
    return result, printed.getvalue()


def test_demo_pushes_an_image_the_registry_serves_by_digest_and_the_engine_runs(stack, docker_client, demo):
    result, printed = demo
    digest, ref, tag = result["digest"], result["ref"], result["tags"][0]
    assert f"digest       : {digest}" in printed
    assert f"{stack.url(stack.prefect_port)}/runs/flow-run/" in printed

    # The registry serves the manifest under exactly the digest the run reported.
    resp = httpx.head(f"{stack.url(stack.registry_port)}/v2/opsflow/smoke/manifests/{digest}",
                      headers={"Accept": MANIFEST_TYPES}, timeout=10)
    assert resp.status_code == 200 and resp.headers["Docker-Content-Digest"] == digest
    tag_resp = httpx.head(f"{stack.url(stack.registry_port)}/v2/opsflow/smoke/manifests/{tag}",
                          headers={"Accept": MANIFEST_TYPES}, timeout=10)
    assert tag_resp.headers["Docker-Content-Digest"] == digest

    # Forget the local copy, pull it back from the registry by digest, and run it.
    docker_client.images.remove(f"{result['repository']}:{tag}", force=True)
    pulled = docker_client.images.pull(ref)
    assert digest in "".join(pulled.attrs["RepoDigests"])
    assert pulled.labels["org.opencontainers.image.source"] == "opsflow:flows/smoke.py"
    assert pulled.labels["org.opencontainers.image.created"].endswith("Z")
    output = docker_client.containers.run(ref, remove=True)
    assert output.decode() == f"hello from opsflow smoke image {tag}\n"


def test_the_demo_run_ran_on_the_vault_build_worker(stack, demo):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["demo"])))
    run_id = demo[0]["run_url"].rsplit("/", 1)[1]
    run = next(r for r in runs if str(r.id) == run_id)
    assert run.work_pool_name == "vault-build"
    assert run.state.is_completed()
    assert run.name == f"smoke-image-{demo[0]['tags'][0]}"
