"""Build-artifact retention and Docker host pruning: the flow against the stack (the pure plan:
tests/unit/flows/test_housekeeping.py)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.registry_images import push_image


@pytest.mark.stack
@pytest.mark.docker
def test_housekeeping_dry_run_then_apply(stack, docker_client):
    from blocks import ContainerRegistry, DockerHostTarget, ObjectStore
    from flows.housekeeping import housekeeping
    from tasks.deploy.records import DeployedImage, DeployRecord, record_key, write_deploy_record
    from tasks.images.base import ensure_base_image

    uid = uuid.uuid4().hex[:8]
    store = ObjectStore.load("opsflow-artifacts")
    registry = ContainerRegistry.load("local-registry")
    s3 = store.get_client()
    deployed_commit, old_commit = uuid.uuid4().hex + "a" * 8, uuid.uuid4().hex + "b" * 8
    keys = {}
    for name, days, commit in (("new", 1, "e" * 40), ("old", 90, old_commit), ("deployed", 80, deployed_commit)):
        key = f"hk-{uid}/backend/{name}"
        s3.put_object(Bucket=store.bucket, Key=f"{key}.tar.gz", Body=b"x" * 100)
        s3.put_object(Bucket=store.bucket, Key=f"{key}.json", Body=json.dumps({
            "app": f"hk-{uid}", "component": "backend", "commit": commit, "size": 100,
            "created": (datetime.now(UTC) - timedelta(days=days)).isoformat()}).encode())
        keys[name] = key
    with registry.get_client() as http:
        digest = push_image(http, f"hk-{uid}/backend", ["deployed"], 80,
                            labels={"org.opencontainers.image.revision": deployed_commit})
    record = DeployRecord(app=f"hk-{uid}", target="edge-y", target_kind="docker",
                          images=[DeployedImage(component="backend", repository=f"{registry.host}/hk-{uid}/backend",
                                                digest=digest)])
    write_deploy_record(store, record)
    engine = DockerHostTarget.load("build-server")
    stopped = docker_client.containers.create(ensure_base_image(engine, "busybox"), command=["/bin/true"],
                                              labels={"opsflow.test": uid})

    def exists(key: str) -> bool:
        return s3.list_objects_v2(Bucket=store.bucket, Prefix=key)["KeyCount"] == 2

    try:
        dry = housekeeping(keep_newest=1, older_than_days=30, docker_hosts=["build-server"],
                           stopped_older_than_days=0)
        assert dry["applied"] is False and all(exists(k) for k in keys.values())
        assert stopped.id in {c.id for c in docker_client.containers.list(all=True)}
        done = housekeeping(keep_newest=1, older_than_days=30, docker_hosts=["build-server"],
                            stopped_older_than_days=0, apply=True)
        assert done["artifact_bytes_freed"] >= 100
        assert exists(keys["new"]) and exists(keys["deployed"]) and not exists(keys["old"])
        assert stopped.id not in {c.id for c in docker_client.containers.list(all=True)}
    finally:
        s3.delete_object(Bucket=store.bucket, Key=record_key(record.app, record.target))
        for key in keys.values():
            s3.delete_object(Bucket=store.bucket, Key=f"{key}.json")
            s3.delete_object(Bucket=store.bucket, Key=f"{key}.tar.gz")
        for container in docker_client.containers.list(all=True, filters={"label": f"opsflow.test={uid}"}):
            container.remove(force=True)
