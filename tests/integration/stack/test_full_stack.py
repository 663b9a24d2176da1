"""The whole local platform: every service healthy, blocks usable, a second up starts nothing."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from blocks import ContainerRegistry, DockerHostTarget, MlflowServer, ObjectStore
from opsflow.stack import Stack
from opsflow.stack.config import BUCKETS

pytestmark = [pytest.mark.stack]


def test_second_up_starts_nothing_and_status_is_healthy(stack):
    lines: list[str] = []
    assert Stack(stack, say=lines.append).up() == []
    assert "nothing to start: every service is already running" in lines
    rows = Stack(stack, say=lines.append).status()
    database = ["postgres"] if stack.database == "postgres" else []
    assert [r.name for r in rows] == ["docker", "s3", "registry", *database, "prefect", "mlflow",
                                      "worker-vault-build", "worker-edge"]
    assert all(r.healthy for r in rows), [r.line() for r in rows if not r.healthy]


def test_cli_status_prints_every_service_with_its_url(stack):
    opsflow = Path(sys.executable).parent / "opsflow"
    ports = [f"--{k.replace('_', '-')}={v}" for k, v in stack.ports().items()] + [f"--database={stack.database}"]
    out = subprocess.run([str(opsflow), "stack", "status", f"--home={stack.home}", *ports],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"prefect             healthy   {stack.url(stack.prefect_port)}" in out.stdout
    assert "worker-vault-build  healthy" in out.stdout


def test_object_store_block_round_trips_an_object(stack):
    store = ObjectStore.load("opsflow-artifacts")
    s3 = store.get_client()
    assert set(BUCKETS) <= {b["Name"] for b in s3.list_buckets()["Buckets"]}
    key = f"tests/{uuid.uuid4().hex}.txt"
    try:
        s3.put_object(Bucket=store.bucket, Key=key, Body=b"payload")
        assert s3.get_object(Bucket=store.bucket, Key=key)["Body"].read() == b"payload"
    finally:
        s3.delete_object(Bucket=store.bucket, Key=key)


def test_registry_mlflow_and_engine_blocks_point_at_live_services(stack):
    registry = ContainerRegistry.load("local-registry")
    assert httpx.get(f"{registry.url}/v2/", timeout=5).status_code == 200
    mlflow = MlflowServer.load("local-mlflow")
    assert httpx.get(f"{mlflow.tracking_uri}/health", timeout=5).text.strip() == "OK"
    engine = DockerHostTarget.load("build-server")
    client = engine.get_client()
    try:
        assert client.ping()
    finally:
        client.close()


def test_mlflow_stores_artifacts_in_the_object_store(stack, tmp_path):
    import mlflow

    mlflow.set_tracking_uri(MlflowServer.load("local-mlflow").tracking_uri)
    mlflow.set_experiment(f"stack-test-{uuid.uuid4().hex[:8]}")
    (tmp_path / "note.txt").write_text("artifact body")
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1.5)
        mlflow.log_artifact(str(tmp_path / "note.txt"))
    s3 = ObjectStore.load("opsflow-artifacts").get_client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="opsflow-mlflow").get("Contents", [])]
    assert any(k.endswith(f"{run.info.run_id}/artifacts/note.txt") for k in keys), keys
