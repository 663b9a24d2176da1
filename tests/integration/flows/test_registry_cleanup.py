"""Registry cleanup against the real registries: the stack's (TLS, htpasswd) with dry run, apply, garbage
collection and the check after it; the token-auth one with a robot account that may not list the catalog.

Images are pushed through the v2 API (any creation time, shared digests, OCI indexes, one with tagged
platform manifests, cosign signatures); one is a real image a container on the build server's engine
uses; one is named by a deploy record.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.support.registry_images import manifest_exists, push_image, push_index, push_signature, tags
from tests.support.token_registry import ROBOT, ROBOT_PASSWORD

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
    http = registry.get_client()  # TLS with the stack's CA, htpasswd login
    RegistryCleanupPolicy(rules=[
        CleanupRule(priority=10, description="commit tags", tags=["re:[0-9a-f]{7}"], keep_newest=2, older_than_days=30),
        CleanupRule(priority=20, description="throw-away", tags=["old-*", "multi", "running", "v2.0.0-*"],
                    keep_newest=0),
    ]).save(f"cleanup-it-{uid}")

    sha = {i: push_image(http, app, [f"a00000{i}"], days) for i, days in ((1, 1), (2, 20), (3, 40), (4, 60))}
    shared = push_image(http, app, ["a000005", "latest"], 80)
    release = push_image(http, app, ["v1.0.0"], 200)
    old_pair = push_image(http, app, ["old-a", "old-b"], 90)
    push_image(http, app, ["feature"], 100)
    index, children = push_index(http, app, "multi", 120)
    # issue 21: a kept multi-arch release whose amd64 manifest also carries a throw-away tag
    _kept_index, kept_children = push_index(http, app, "v2.0.0", 150, child_tags={"amd64": "v2.0.0-amd64"})
    old_sig = push_signature(http, app, old_pair, days_old=1)  # young, but its image goes
    release_sig = push_signature(http, app, release, days_old=300)  # old, but its image stays
    push_image(http, web, ["old-1"], 70)
    push_image(http, web, ["t1"], 70)
    old_layer = http.get(f"/v2/{app}/manifests/old-a",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()["layers"][0]["digest"]

    # A real image that a (stopped) container on the build server uses.
    engine = DockerHostTarget.load("build-server")
    base = ensure_base_image(engine, "busybox")
    running_ref = f"{registry.host}/{app}"
    docker_client.images.get(base).tag(running_ref, "running")
    for line in docker_client.images.push(running_ref, tag="running", stream=True, decode=True,
                                          auth_config=registry.auth_config()):
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
        assert dry["applied"] is False and dry["inventory"] == "the registry's catalog (/v2/_catalog)"
        # a000003, the old-a/old-b manifest with its signature, the index "multi" with its two platform manifests,
        # and web:old-1; a000005 shares latest's manifest; v2.0.0-amd64 belongs to the kept v2.0.0 index
        assert (dry["delete_manifests"], dry["untag"]) == (7, 1)
        assert {app: tags(http, app), web: tags(http, web)} == before  # a dry run changes nothing
        artifact = Artifact.get(PLAN_KEY)
        assert artifact is not None and "a000003" in str(artifact.data) and "in use" in str(artifact.data)

        done = registry_cleanup(registry_block="local-registry", policy_block=f"cleanup-it-{uid}",
                                repositories=[f"cleanup-it-{uid}/*"], docker_hosts=["build-server"], apply=True)
        assert done["deleted_manifests"] == 7 and done["untagged"] == 1
        release_sig_tag = f"sha256-{release.removeprefix('sha256:')}.sig"
        assert tags(http, app) == {"a000001", "a000002", "a000004", "latest", "v1.0.0", "feature", "running",
                                   "v2.0.0", "v2.0.0-amd64", release_sig_tag}
        assert tags(http, web) == {"t1"}
        assert manifest_exists(http, app, release_sig) and not manifest_exists(http, app, old_sig)
        # the kept multi-arch image still pulls after garbage collection, each platform (checked by the flow too)
        assert done["verified_tags"] == len(tags(http, app)) + len(tags(http, web))
        assert all(manifest_exists(http, app, child) for child in kept_children)
        for tag in tags(http, app) - {"running", "v2.0.0"}:
            assert _blobs_pullable(http, app, tag), tag
        assert manifest_exists(http, app, shared)  # still tagged latest: only a000005 was removed
        assert manifest_exists(http, app, sha[4])  # in use by a recorded deploy
        docker_client.images.remove(f"{running_ref}:running")
        docker_client.images.pull(running_ref, tag="running", auth_config=registry.auth_config())  # still pulls
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


def test_a_robot_account_that_may_not_list_the_catalog_cleans_the_listed_repositories(stack, token_registry):
    """The token-auth registry, as Harbor serves robots: no /v2/_catalog. The policy's repository list is the
    inventory (and the run says so); with kind: harbor, Harbor's projects/repositories API is."""
    from blocks.cleanup_policy import CleanupRule, RegistryCleanupPolicy
    from flows.registry_cleanup import registry_cleanup
    from opsflow.core.errors import InvalidInput

    uid = uuid.uuid4().hex[:8]
    repo = f"team-{uid}/app"
    http = token_registry.block().get_client()  # the builder pushes
    push_image(http, repo, ["keep-1"], 1)
    old = push_image(http, repo, ["old-1"], 90)
    signature = push_signature(http, repo, old)
    rules = [CleanupRule(priority=1, tags=["old-*"], keep_newest=0)]
    RegistryCleanupPolicy(rules=rules, repositories=[repo]).save(f"robot-{uid}")
    RegistryCleanupPolicy(rules=rules).save(f"robot-unlisted-{uid}")
    token_registry.block(ROBOT, ROBOT_PASSWORD).save(f"robot-{uid}")
    token_registry.block(ROBOT, ROBOT_PASSWORD, kind="harbor",
                         harbor_api_url=token_registry.issuer.url).save(f"harbor-{uid}")
    common = {"docker_hosts": [], "deploy_records_store": None}
    try:
        with pytest.raises(InvalidInput, match=r"refuses to list its repositories.*by name in the policy's"):
            registry_cleanup(registry_block=f"robot-{uid}", policy_block=f"robot-unlisted-{uid}", **common)
        done = registry_cleanup(registry_block=f"robot-{uid}", policy_block=f"robot-{uid}", apply=True, **common)
        assert done["inventory"].startswith("the repositories listed by name") and done["repositories"] == 1
        assert done["deleted_manifests"] == 2  # old-1 and its signature
        assert tags(http, repo) == {"keep-1"} and not manifest_exists(http, repo, signature)

        push_image(http, repo, ["old-2"], 90)
        harbor = registry_cleanup(registry_block=f"harbor-{uid}", policy_block=f"robot-unlisted-{uid}",
                                  repositories=[f"team-{uid}/*"], **common)
        assert harbor["inventory"] == "Harbor's projects/repositories API"
        assert (harbor["tags"], harbor["delete_manifests"]) == (2, 1)
        # the robot never got a catalog token (it asked once, as a plain distribution client does)
        robot = token_registry.issuer.token_requests(ROBOT)
        assert robot and not any(a["type"] == "registry" for r in robot for a in r["access"])
    finally:
        http.close()


def test_a_kept_tag_that_no_longer_pulls_after_garbage_collection_fails_the_check_loudly(stack, run_logger_off):
    """What ``garbage-collect --delete-untagged`` does to a kept multi-arch image (distribution 2.8), done by
    hand: a platform manifest of the kept index is deleted. The check after garbage collection names the tag."""
    from blocks import ContainerRegistry
    from opsflow.core.errors import RegistryBroken
    from tasks.registry.gc import verify_kept_images
    from tasks.registry.plan import KEEP, CleanupPlan, PlanRow

    registry = ContainerRegistry.load("local-registry")
    repo = f"gc-check-{uuid.uuid4().hex[:8]}/app"
    with registry.get_client() as http:
        index, children = push_index(http, repo, "v3.0.0", 10, child_tags={"amd64": "c-amd64", "arm64": "c-arm64"})
        single = push_image(http, repo, ["v3.0.1"], 10)
        rows = [PlanRow(repo, "v3.0.0", index, None, 0, "always-keep", KEEP, "release"),
                PlanRow(repo, "v3.0.1", single, None, 0, "always-keep", KEEP, "release")]
        assert verify_kept_images.fn(registry, CleanupPlan(rows)) == 2
        assert http.delete(f"/v2/{repo}/manifests/{children[1]}").status_code == 202
    with pytest.raises(RegistryBroken, match=rf"1 kept tag\(s\) .*{repo}:v3\.0\.0: child {children[1][:19]}"):
        verify_kept_images.fn(registry, CleanupPlan(rows))
