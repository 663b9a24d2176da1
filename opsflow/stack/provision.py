"""What ``stack up`` creates inside the running services: buckets, work pools, blocks."""

from __future__ import annotations

import sys
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from blocks import BLOCK_CLASSES, ContainerRegistry, DockerHostTarget, MlflowServer, ObjectStore, names
from blocks.cleanup_policy import CleanupRule, RegistryCleanupPolicy
from opsflow.core.errors import ServiceError
from opsflow.stack.config import BUCKETS, WORK_POOLS, StackConfig
from opsflow.stack.tls import RegistryDoor

#: Object store blocks ``stack up`` creates, each on the bucket of the same name.
OBJECT_STORES = (names.ARTIFACT_STORE, names.DATA_STORE)


def create_buckets(cfg: StackConfig, creds: dict[str, str]) -> list[str]:
    """Create the buckets the flows need; return the ones that were new."""
    s3 = boto3.session.Session().client(
        "s3", endpoint_url=cfg.url(cfg.s3_port), region_name="us-east-1",
        aws_access_key_id=creds["s3_access_key"], aws_secret_access_key=creds["s3_secret_key"],
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 5, "mode": "standard"}),
    )
    created = []
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS:
        if bucket in existing:
            continue
        try:
            s3.create_bucket(Bucket=bucket)
            created.append(bucket)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise ServiceError("s3", f"could not create bucket {bucket}: {exc.response['Error']['Code']}") from exc
    return created


def provision_prefect(cfg: StackConfig, creds: dict[str, str], docker_url: str | None) -> list[str]:
    """Register opsflow's block types, create the local blocks, the work pools (type ``opsflow``) and the
    automation that crashes runs whose heartbeats stopped. Idempotent."""
    from prefect.client.orchestration import get_client
    from prefect.settings import temporary_settings

    from opsflow.core.heartbeats import ensure_zombie_automation
    from opsflow.core.pools import ensure_work_pool

    done: list[str] = []
    with temporary_settings(cfg.client_settings()):
        for cls in BLOCK_CLASSES:
            cls.register_type_and_schema()
        for block_name in OBJECT_STORES:
            ObjectStore(
                endpoint_url=cfg.url(cfg.s3_port), bucket=block_name,
                access_key_id=creds["s3_access_key"], secret_access_key=creds["s3_secret_key"],
            ).save(block_name, overwrite=True)
        opsflow_bin = str(Path(sys.executable).parent / "opsflow")
        door = RegistryDoor(cfg.home / "registry")
        ContainerRegistry(
            url=cfg.registry_url, username=creds["registry_user"], password=creds["registry_password"],
            ca_cert=door.ca_file.read_text(),
            gc_command=[opsflow_bin, "stack", "registry-gc", "--home", str(cfg.home)],
            storage_root=str(cfg.home / "registry" / "data"),
        ).save(names.REGISTRY, overwrite=True)
        if not _block_exists(RegistryCleanupPolicy, names.CLEANUP_POLICY):  # users edit it in the UI: keep theirs
            RegistryCleanupPolicy(rules=[
                CleanupRule(priority=10, description="commit-SHA tags", tags=[r"re:[0-9a-f]{7,40}"],
                            keep_newest=20, older_than_days=14),
                CleanupRule(priority=20, description="branch and PR tags", tags=["*"], keep_newest=10,
                            older_than_days=30),
            ]).save(names.CLEANUP_POLICY)
        MlflowServer(tracking_uri=cfg.url(cfg.mlflow_port)).save(names.MLFLOW, overwrite=True)
        if docker_url:
            # The build server builds with host networking; the edge node deploys onto opsflow's own
            # bridge networks (which work on the stack's --bridge=none engine too), so rolling deploys
            # start the new version beside the old one and blue-green works out of the box.
            DockerHostTarget(name=names.BUILD_ENGINE, base_url=docker_url, network_mode="host").save(
                names.BUILD_ENGINE, overwrite=True)
            DockerHostTarget(name=names.EDGE_NODE, base_url=docker_url, network_mode="bridge").save(
                names.EDGE_NODE, overwrite=True)
        done.append(f"blocks: {len(BLOCK_CLASSES)} types registered, local blocks saved")

        with get_client(sync_client=True) as client:
            for pool in WORK_POOLS:
                done.append(ensure_work_pool(client, pool, description=f"opsflow {pool} workers"))
            done.append(ensure_zombie_automation(client))
    return done


def _block_exists(cls, name: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    try:
        cls.load(name)
    except (ObjectNotFound, ValueError):
        return False
    return True
