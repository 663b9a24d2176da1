"""The whole local platform: every service healthy, blocks usable, a second up starts nothing."""

from __future__ import annotations

import os
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


def test_the_prefect_server_refuses_every_request_without_its_auth_string(stack):
    """The session's server runs with PREFECT_SERVER_API_AUTH_STRING: no block, run or deployment without it."""
    import stat

    from opsflow.core.prefect_api import basic_auth_header

    api = stack.prefect_api_url
    for path, body in (("block_documents/filter", {"include_secrets": True}), ("flow_runs/filter", {}),
                       ("deployments/filter", {})):
        assert httpx.post(f"{api}/{path}", json=body, timeout=10).status_code == 401, path
        wrong = basic_auth_header("opsflow:not-the-string")
        assert httpx.post(f"{api}/{path}", json=body, headers=wrong, timeout=10).status_code == 401, path
    ok = httpx.post(f"{api}/flow_runs/filter", json={"limit": 1}, timeout=10,
                    headers=basic_auth_header(stack.api_auth_string()))
    assert ok.status_code == 200
    assert httpx.get(f"{api}/health", timeout=10).status_code == 200  # health probes stay open
    assert stat.S_IMODE(stack.auth_file.stat().st_mode) == 0o600
    argv = [Path(f"/proc/{pid}/cmdline") for pid in os.listdir("/proc") if pid.isdigit()]
    assert not [a for a in argv if a.exists() and stack.api_auth_string().encode() in _read(a)]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_registry_mlflow_and_engine_blocks_point_at_live_services(stack):
    registry = ContainerRegistry.load("local-registry")
    assert registry.url.startswith("https://") and registry.username and registry.ca_cert
    with registry.get_client() as client:  # TLS verified with the stack's CA, htpasswd login
        assert client.get("/v2/", timeout=5).status_code == 200
    assert httpx.get(f"{registry.url}/v2/", timeout=5, verify=False).status_code == 401  # noqa: S501 - proves the login
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
