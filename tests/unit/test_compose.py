"""deployments/compose.yaml: valid for docker-compose, matches what `opsflow stack` runs, no inline secrets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.support.paths import ROOT

COMPOSE = ROOT / "deployments" / "compose.yaml"
ENV_EXAMPLE = COMPOSE.parent / "compose" / ".env.example"


def _env_example() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_compose_has_the_stack_services_pinned_healthy_and_without_secrets():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"postgres", "prefect", "minio", "registry", "mlflow", "webhook", "worker-build"} <= services.keys()
    for name, svc in services.items():
        image = svc.get("image", "")
        assert re.search(r":[\w][\w.-]*$", image) and not image.endswith(":latest"), f"{name}: pin {image!r}"
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|KEY_ID|TOKEN|AUTH_STRING", key):
                assert str(value).startswith("${"), f"{name}: {key} must come from the env file"
        if name in ("postgres", "prefect", "minio", "registry", "mlflow"):
            assert svc.get("healthcheck"), f"{name} needs a healthcheck"
    assert services["registry"]["environment"]["REGISTRY_STORAGE_DELETE_ENABLED"] == "true"
    assert "postgresql+asyncpg://" in services["prefect"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert services["prefect"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # Prefect server auth: the server and every opsflow client take the one shared string from the env file.
    server_env = services["prefect"]["environment"]
    assert server_env["PREFECT_SERVER_API_AUTH_STRING"].startswith("${PREFECT_AUTH_STRING")
    # the same server settings as `opsflow stack up`'s
    from opsflow.stack.services import CANCELLATION_CLEANUP_LOOP_S

    assert server_env["PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS"] == str(CANCELLATION_CLEANUP_LOOP_S)
    for name in ("webhook", "worker-build"):
        assert services[name]["environment"]["PREFECT_API_AUTH_STRING"].startswith("${PREFECT_AUTH_STRING"), name
    assert "deployments/compose/.env" in (COMPOSE.parent.parent / ".gitignore").read_text()


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose is not installed")
def test_docker_compose_config_accepts_it_and_names_missing_secrets():
    env = {k: v for k, v in os.environ.items() if k not in _env_example()}
    ok = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], env={**env, **_env_example()},
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert "set POSTGRES_PASSWORD in compose/.env" in missing.stdout + missing.stderr
