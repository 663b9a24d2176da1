"""Build-artifact retention in object storage: keep the newest N per app and component, keep what a
deployed image was built from, delete the rest once older than D days. Dry run by default."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError
from prefect import get_run_logger, task

from blocks import ContainerRegistry, ObjectStore
from opsflow.core.errors import RemoteError
from opsflow.core.threads import ContextThreadPool
from tasks.deploy.records import PREFIX as DEPLOY_RECORDS_PREFIX
from tasks.deploy.records import read_deploy_records


@dataclass(frozen=True)
class StoredArtifact:
    key: str  # without the .tar.gz/.json suffix
    app: str
    component: str
    commit: str
    created: datetime | None
    size: int


@dataclass(frozen=True)
class RetentionRow:
    key: str
    app: str
    component: str
    commit: str
    created: datetime | None
    size: int
    action: str  # keep | delete
    reason: str


@task(name="list-build-artifacts", task_run_name="list-build-artifacts", retries=2, retry_delay_seconds=5)
def list_build_artifacts(store: ObjectStore) -> list[StoredArtifact]:
    """Every complete artifact (its metadata object) in the store."""
    client = store.get_client()
    try:
        keys = [obj["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
                for obj in page.get("Contents", [])
                if obj["Key"].endswith(".json") and not obj["Key"].startswith(DEPLOY_RECORDS_PREFIX)]
    except (BotoCoreError, ClientError) as exc:
        raise RemoteError(f"cannot list s3://{store.bucket}: {exc}") from exc

    def read(key: str) -> StoredArtifact | None:
        meta = json.loads(client.get_object(Bucket=store.bucket, Key=key)["Body"].read())
        if not {"app", "component", "commit"} <= meta.keys():
            return None  # not an artifact's metadata
        created = datetime.fromisoformat(meta["created"]) if meta.get("created") else None
        return StoredArtifact(key.removesuffix(".json"), meta["app"], meta["component"], meta["commit"], created,
                              int(meta.get("size", 0)))

    with ContextThreadPool(8) as pool:
        found = [a for a in pool.map(read, keys) if a is not None]
    get_run_logger().info("s3://%s: %d build artifacts", store.bucket, len(found))
    return found


@task(name="find-deployed-commits", task_run_name="find-deployed-commits", retries=2, retry_delay_seconds=5)
def find_deployed_commits(store: ObjectStore, registry: ContainerRegistry) -> set[str]:
    """Commits the deployed images were built from (their ``org.opencontainers.image.revision``)."""
    commits: set[str] = set()
    with registry.get_client() as http:
        for record in read_deploy_records(store):
            for image in (*record.images, *record.previous):
                repo = image.repository.removeprefix(f"{registry.host}/")
                manifest = http.get(f"/v2/{repo}/manifests/{image.digest}")
                if manifest.status_code != 200:
                    continue
                config = (manifest.json().get("config") or {}).get("digest")
                if not config:
                    continue
                blob = http.get(f"/v2/{repo}/blobs/{config}", follow_redirects=True)
                if blob.status_code == 200:
                    labels = (blob.json().get("config") or {}).get("Labels") or {}
                    if labels.get("org.opencontainers.image.revision"):
                        commits.add(labels["org.opencontainers.image.revision"])
    return commits


def plan_artifact_retention(artifacts: list[StoredArtifact], keep_newest: int, older_than_days: float,
                            protected_commits: set[str], now: datetime | None = None) -> list[RetentionRow]:
    """Pure: per (app, component) the newest ``keep_newest`` stay; older ones are deleted once
    older than ``older_than_days``, unless a deployed image was built from their commit."""
    if keep_newest < 0 or older_than_days < 0:
        raise ValueError("keep_newest and older_than_days must not be negative")
    now = now or datetime.now(UTC)
    groups: dict[tuple[str, str], list[StoredArtifact]] = {}
    for art in artifacts:
        groups.setdefault((art.app, art.component), []).append(art)
    oldest = datetime.min.replace(tzinfo=UTC)
    rows = []
    for members in groups.values():
        members.sort(key=lambda a: (a.created or oldest, a.key), reverse=True)
        for rank, art in enumerate(members):
            if rank < keep_newest:
                action, reason = "keep", f"among the newest {keep_newest}"
            elif art.commit in protected_commits:
                action, reason = "keep", "a deployed image was built from this commit"
            elif art.created is None or now - art.created <= timedelta(days=older_than_days):
                action, reason = "keep", f"not older than {older_than_days:g} days"
            else:
                action, reason = "delete", f"beyond the newest {keep_newest} and older than {older_than_days:g} days"
            rows.append(RetentionRow(art.key, art.app, art.component, art.commit, art.created, art.size, action,
                                     reason))
    return sorted(rows, key=lambda r: (r.app, r.component, r.action, r.key))


@task(name="delete-build-artifacts", task_run_name="delete-build-artifacts")
def delete_build_artifacts(store: ObjectStore, rows: list[RetentionRow]) -> int:
    """Delete the rows marked delete: the metadata first (so a half-deleted artifact is never
    loaded), then the archive. Returns the bytes freed."""
    client = store.get_client()
    freed = 0
    for row in rows:
        if row.action != "delete":
            continue
        try:
            client.delete_object(Bucket=store.bucket, Key=f"{row.key}.json")
            client.delete_object(Bucket=store.bucket, Key=f"{row.key}.tar.gz")
        except (BotoCoreError, ClientError) as exc:
            raise RemoteError(f"cannot delete artifact {row.key}: {exc}") from exc
        freed += row.size
    get_run_logger().info("deleted %d artifacts, %d bytes", sum(r.action == "delete" for r in rows), freed)
    return freed
