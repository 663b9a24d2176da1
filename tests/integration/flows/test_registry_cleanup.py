"""Registry cleanup against the real registry of the stack: dry run, apply, garbage collection.

Images are pushed through the v2 API (any creation time, shared digests, an OCI index); one is
a real image a container on the build server's engine uses; one is named by a deploy record.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.support.registry_images import manifest_exists, push_image, push_index, tags

pytestmark = [pytest.mark.stack, pytest.mark.docker]


def _blobs_pullable(http: httpx.Client, repo: str, tag: str) -> bool:
    """GET the manifest and HEAD every blob it names: what a pull needs."""
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    resp = http.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
    if resp.status_code != 200:
        return False
    manifest = resp.json()
    blobs = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    return all(http.head(f"/v2/{repo}/blobs/{b}").status_code == 200 for b in blobs)


def test_cleanup_dry_run_then_apply_deletes_exactly_the_plan_and_frees_storage(stack, docker_client):
    from prefect.artifacts import Artifact

    from blocks import ContainerRegistry, DockerHostTarget, ObjectStore
    from blocks.cleanup_policy import CleanupRule, RegistryCleanupPolicy
    from flows.registry_cleanup import PLAN_KEY, registry_cleanup
    from tasks.deploy.records import DeployedImage, DeployRecord, record_key, write_deploy_record
    from tasks.images.base import ensure_base_image

    uid = uuid.uuid4().hex[:8]
    app, web = f"cleanup-it-{uid}/app", f"cleanup-it-{uid}/web"
    registry = ContainerRegistry.load("local-registry")
    store = ObjectStore.load("opsflow-artifacts")
    http = httpx.Client(base_url=registry.url, timeout=30)
    RegistryCleanupPolicy(rules=[
        CleanupRule(priority=10, description="commit tags", tags=["re:[0-9a-f]{7}"], keep_newest=2, older_than_days=30),
        CleanupRule(priority=20, description="throw-away", tags=["old-*", "multi", "running"], keep_newest=0),
    ]).save(f"cleanup-it-{uid}")

    sha = {i: push_image(http, app, [f"a00000{i}"], days) for i, days in ((1, 1), (2, 20), (3, 40), (4, 60))}
    shared = push_image(http, app, ["a000005", "latest"], 80)
    push_image(http, app, ["v1.0.0"], 200)
    old_pair = push_image(http, app, ["old-a", "old-b"], 90)
    push_image(http, app, ["feature"], 100)
    index, children = push_index(http, app, "multi", 120)
    push_image(http, web, ["old-1"], 70)
    push_image(http, web, ["t1"], 70)
    old_layer = http.get(f"/v2/{app}/manifests/old-a",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()["layers"][0]["digest"]

    # A real image that a (stopped) container on the build server uses.
    engine = DockerHostTarget.load("build-server")
    base = ensure_base_image(engine, "busybox")
    running_ref = f"{registry.host}/{app}"
    docker_client.images.get(base).tag(running_ref, "running")
    for line in docker_client.images.push(running_ref, tag="running", stream=True, decode=True):
        assert "error" not in line, line
    container = docker_client.containers.create(f"{running_ref}:running", command=["/bin/true"],
                                                labels={"opsflow.test": uid})
    record = DeployRecord(app=f"cleanup-it-{uid}", target="edge-x", target_kind="docker",
                          images=[DeployedImage(component="app", repository=app, digest=sha[4])])
    write_deploy_record(store, record)
    before = {app: tags(http, app), web: tags(http, web)}
    try:
        dry = registry_cleanup(registry_block="local-registry", policy_block=f"cleanup-it-{uid}",
                               repositories=[f"cleanup-it-{uid}/*"], docker_hosts=["build-server"])
        assert dry["applied"] is False
        # a000003, the old-a/old-b manifest, the index "multi" and web:old-1; a000005 shares latest's manifest
        assert (dry["delete_manifests"], dry["untag"]) == (4, 1)
        assert {app: tags(http, app), web: tags(http, web)} == before  # a dry run changes nothing
        artifact = Artifact.get(PLAN_KEY)
        assert artifact is not None and "a000003" in str(artifact.data) and "in use" in str(artifact.data)

        done = registry_cleanup(registry_block="local-registry", policy_block=f"cleanup-it-{uid}",
                                repositories=[f"cleanup-it-{uid}/*"], docker_hosts=["build-server"], apply=True)
        assert done["deleted_manifests"] == 4 and done["untagged"] == 1
        assert tags(http, app) == {"a000001", "a000002", "a000004", "latest", "v1.0.0", "feature", "running"}
        assert tags(http, web) == {"t1"}
        for tag in tags(http, app) - {"running"}:
            assert _blobs_pullable(http, app, tag), tag
        assert manifest_exists(http, app, shared)  # still tagged latest: only a000005 was removed
        assert manifest_exists(http, app, sha[4])  # in use by a recorded deploy
        docker_client.images.remove(f"{running_ref}:running")
        docker_client.images.pull(running_ref, tag="running")  # the container's image still pulls
        for gone in (old_pair, index, sha[3]):
            assert not manifest_exists(http, app, gone)
        # Garbage collection ran (the registry was stopped meanwhile) and freed the deleted layers.
        assert done["bytes_freed"] > 0
        assert http.head(f"/v2/{app}/blobs/{old_layer}").status_code == 404
        assert not any(manifest_exists(http, app, child) for child in children)

        again = registry_cleanup(registry_block="local-registry", policy_block=f"cleanup-it-{uid}",
                                 repositories=[f"cleanup-it-{uid}/*"], docker_hosts=["build-server"])
        assert (again["delete_manifests"], again["untag"]) == (0, 0)
    finally:
        container.remove(force=True)
        store.get_client().delete_object(Bucket=store.bucket, Key=record_key(record.app, record.target))
        http.close()


def test_a_bad_policy_override_fails_before_anything_is_read(stack):
    from flows.registry_cleanup import registry_cleanup

    with pytest.raises(Exception, match=r"rules 1 and 2 both have priority 3"):
        registry_cleanup(policy_block="nightly", rules=[{"priority": 3, "keep_newest": 1},
                                                        {"priority": 3, "older_than_days": 10}])
