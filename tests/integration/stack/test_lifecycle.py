"""Lifecycle of a light stack (S3 + registry): idempotent up, status, down, and start failures."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from opsflow.core.errors import ServiceError
from opsflow.stack import Stack, StackConfig, processes
from opsflow.stack import manager as manager_module
from opsflow.stack.postgres import remove_cluster
from opsflow.stack.services import ServiceSpec


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def light(tmp_path: Path):
    cfg = StackConfig(home=tmp_path / "st", s3_port=free_port(), registry_port=free_port(),
                      prefect_port=free_port(), mlflow_port=free_port(), services=("s3", "registry"))
    lines: list[str] = []
    stack = Stack(cfg, say=lines.append)
    yield stack, lines
    stack.down()
    assert processes.marked_pids(cfg.home) == []
    remove_cluster(cfg.home)  # tmp_path is closed to the postgres user: its cluster dir is in /var/lib/opsflow


def _registry_v2(stack: Stack) -> int:
    """``GET /v2/`` as a client of the stack's registry: TLS verified with its CA, its htpasswd login."""
    from opsflow.registry.v2 import open_client
    from opsflow.stack.config import load_credentials

    creds = load_credentials(stack.cfg.home)
    ca = (stack.cfg.home / "registry" / "tls" / "ca.crt").read_text()
    with open_client(stack.cfg.registry_url, creds["registry_user"], creds["registry_password"], ca_cert=ca) as c:
        return c.get("/v2/", timeout=5).status_code


def test_up_twice_starts_nothing_the_second_time_and_down_leaves_no_process(light):
    stack, lines = light
    assert stack.up() == ["s3", "registry"]
    pids = {s.name: s.pid for s in stack.status()}
    assert _registry_v2(stack) == 200

    lines.clear()
    assert stack.up() == []
    assert "nothing to start: every service is already running" in lines
    assert {s.name: s.pid for s in stack.status()} == pids
    assert all(s.healthy for s in stack.status())

    assert set(stack.down()) == {"s3", "registry"}
    assert processes.marked_pids(stack.cfg.home) == []
    for pid in pids.values():
        assert not processes.alive(pid)
    assert stack.status() == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{stack.cfg.registry_url}/v2/", timeout=2, verify=False)  # noqa: S501 - only: is it down?


def test_a_taken_port_fails_before_anything_starts(light):
    stack, _ = light
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack.cfg.registry_port))
        squatter.listen()
        with pytest.raises(ServiceError, match=f"port {stack.cfg.registry_port} on 127.0.0.1 is taken"):
            stack.up()
    assert processes.marked_pids(stack.cfg.home) == []


def test_a_missing_binary_is_named(light, monkeypatch, tmp_path):
    stack, _ = light
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ServiceError, match="registry: 'docker-registry' is not installed; install CNCF distribution"):
        stack.up()
    assert processes.marked_pids(stack.cfg.home) == []


def test_a_service_dying_during_start_fails_with_its_log_and_stops_the_rest(light, monkeypatch):
    stack, _ = light
    real_build = manager_module.build_specs

    def with_dying_registry(cfg, creds, docker_url):
        specs = real_build(cfg, creds, docker_url)
        specs["registry"] = ServiceSpec(
            name="registry", argv=["sh", "-c", "sleep 1; echo 'panic: storage driver exploded' >&2; exit 3"],
            url="http://127.0.0.1:1", healthy=lambda: False, port=cfg.registry_port)
        return specs

    monkeypatch.setattr(manager_module, "build_specs", with_dying_registry)
    with pytest.raises(ServiceError) as info:
        stack.up()
    assert "registry: exited during start" in str(info.value)
    assert "panic: storage driver exploded" in str(info.value)
    assert processes.marked_pids(stack.cfg.home) == []  # s3, started in the same call, was stopped too


def test_down_with_services_stops_only_those(light):
    stack, _ = light
    assert stack.up() == ["s3", "registry"]
    registry_pid = {s.name: s.pid for s in stack.status()}["registry"]
    only_s3 = Stack(stack.cfg.with_services(("s3",)), say=lambda line: None)
    assert only_s3.down() == ["s3"]
    assert [s.name for s in stack.status()] == ["registry"]
    assert processes.alive(registry_pid)
    assert _registry_v2(stack) == 200
