import os
import stat

import pytest

from opsflow.core.errors import InvalidInput
from opsflow.stack.config import StackConfig, load_credentials


def test_ports_and_services_are_validated():
    with pytest.raises(InvalidInput, match="prefect port 70000"):
        StackConfig(prefect_port=70000)
    with pytest.raises(InvalidInput, match="unknown service"):
        StackConfig(services=("s3", "redis"))
    with pytest.raises(InvalidInput, match="postgresql"):
        StackConfig(database_url="mysql://u:p@db/prefect")


def test_env_then_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("OPSFLOW_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("OPSFLOW_S3_PORT", "19123")
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", "postgresql+asyncpg://prefect:pw@127.0.0.1/prefect")
    cfg = StackConfig.from_env(registry_port=15555, prefect_port=None)
    assert cfg.home == tmp_path / "h" and cfg.s3_port == 19123 and cfg.registry_port == 15555
    assert cfg.prefect_port == 4200
    assert "pw" not in repr(cfg)
    monkeypatch.setenv("OPSFLOW_MLFLOW_PORT", "fifty")
    with pytest.raises(InvalidInput, match="OPSFLOW_MLFLOW_PORT"):
        StackConfig.from_env()


def test_credentials_are_generated_once_with_mode_0600(tmp_path):
    first = load_credentials(tmp_path)
    assert load_credentials(tmp_path) == first
    mode = stat.S_IMODE(os.stat(tmp_path / "credentials.json").st_mode)
    assert mode == 0o600
