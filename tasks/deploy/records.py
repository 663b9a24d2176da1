"""What the manual deploy pipeline records as running: one JSON object per (application, target).

The manual deploy flow writes a record after a deploy is verified healthy (and after a rollback,
the version that serves again); registry cleanup reads every record and never deletes a digest
named in one. Records live in the artifacts object store under ``deployed/<app>/<target>.json``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, Field

from blocks.fields import Digest, Name
from blocks.object_store import ObjectStore
from opsflow.core.errors import RemoteError

PREFIX = "deployed/"


class DeployedImage(BaseModel):
    """One image a target runs."""

    component: Name = Field(description="Component of the application.")
    repository: str = Field(description="Image repository, e.g. 127.0.0.1:5000/shop/backend.")
    digest: Digest = Field(description="Manifest digest the target runs.")
    tag: str | None = Field(default=None, description="Tag the deploy was asked for, when one was.")
    role: Name = Field(default="service", description="Run role of the component (service, batch, ...).")
    replicas: int = Field(default=1, ge=0, description="Instances the target runs (0: scaled to zero, nothing "
                          "runs; a batch role: its last run).")

    @property
    def key(self) -> str:
        return self.component if self.role == "service" else f"{self.component}/{self.role}"


class DeployRecord(BaseModel):
    """What runs on one target for one application, and what ran before it."""

    app: Name
    target: Name = Field(description="Name of the deploy target block's target (node, cluster/namespace, host).")
    target_kind: str = Field(description="kubernetes | docker | ssh-linux | ssh-windows.")
    images: list[DeployedImage]
    previous: list[DeployedImage] = Field(default_factory=list, description="What ran before this deploy.")
    flow_run_id: str | None = None
    deployed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def key(self) -> str:
        return record_key(self.app, self.target)

    def digests(self) -> set[str]:
        """Digests this record protects: the current images and the previous ones (the rollback target)."""
        return {img.digest for img in (*self.images, *self.previous)}


def record_key(app: str, target: str) -> str:
    return f"{PREFIX}{app}/{target}.json"


def write_deploy_record(store: ObjectStore, record: DeployRecord) -> str:
    """Store ``record`` (overwriting the previous one for the same app and target); returns its key.
    Transient S3 failures are retried by the store's client (the block's ``max_attempts``)."""
    body = record.model_dump_json(indent=2).encode()
    try:
        store.get_client().put_object(Bucket=store.bucket, Key=record.key, Body=body,
                                      ContentType="application/json")
    except (BotoCoreError, ClientError) as exc:
        raise RemoteError(f"could not write deploy record s3://{store.bucket}/{record.key}: {exc}") from exc
    return record.key


def read_deploy_record(store: ObjectStore, app: str, target: str) -> DeployRecord | None:
    """The record of ``app`` on ``target``, or None when there is none yet."""
    client = store.get_client()
    try:
        body = client.get_object(Bucket=store.bucket, Key=record_key(app, target))["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise RemoteError(f"could not read deploy record s3://{store.bucket}/{record_key(app, target)}: {exc}") \
            from exc
    except BotoCoreError as exc:
        raise RemoteError(f"could not read deploy record s3://{store.bucket}/{record_key(app, target)}: {exc}") \
            from exc
    try:
        return DeployRecord.model_validate(json.loads(body))
    except ValueError as exc:
        raise RemoteError(f"deploy record s3://{store.bucket}/{record_key(app, target)} is unreadable ({exc}); "
                          "fix or delete it") from exc


def merged_record(before: DeployRecord | None, now: DeployRecord) -> DeployRecord:
    """``now`` (what this deploy changed) on top of ``before``: the components and roles this deploy
    did not touch keep their entries, so a deploy of one component never drops another's images."""
    if before is None:
        return now
    keys = {img.key for img in now.images}
    images = [*now.images, *(img for img in before.images if img.key not in keys)]
    previous = [*now.previous, *(img for img in before.previous if img.key not in keys)]
    return now.model_copy(update={"images": images, "previous": previous})


def read_deploy_records(store: ObjectStore) -> list[DeployRecord]:
    """Every deploy record in the store; an unreadable record is an error, never silently skipped
    (a cleanup that missed one could delete what runs)."""
    client = store.get_client()
    records: list[DeployRecord] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=PREFIX):
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith(".json"):
                    continue
                body = client.get_object(Bucket=store.bucket, Key=obj["Key"])["Body"].read()
                try:
                    records.append(DeployRecord.model_validate(json.loads(body)))
                except ValueError as exc:
                    raise RemoteError(f"deploy record s3://{store.bucket}/{obj['Key']} is unreadable ({exc}); "
                                      "fix or delete it before cleaning up") from exc
    except (BotoCoreError, ClientError) as exc:
        raise RemoteError(f"could not list deploy records in s3://{store.bucket}/{PREFIX}: {exc}") from exc
    return records
