"""The deploy section of the Application block and the deploy fields of the target blocks: runtime
configuration, run roles, quantities; bad input rejected with the field named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from blocks import Application, DockerHostTarget
from blocks.application import RuntimeConfig
from blocks.fields import Memory, check_cpu, check_memory, cpu_nanos, memory_bytes

APP = dict(name="shop", repository="https://git.lan/team/shop.git")


def errors_for(exc: ValidationError) -> str:
    return " ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors())


def component(**extra) -> dict:
    return {"name": "api", "ports": [8080], **extra}


@pytest.mark.parametrize("value, expected", [
    ("1Pi", 2**50), ("1Ei", 2**60), ("2P", 2 * 10**15), ("1E", 10**18), ("1.5k", 1500), ("128Mi", 128 * 2**20),
    ("0.5Gi", 2**29), ("1", 1), ("0.1", 1),
])
def test_every_memory_quantity_the_field_accepts_converts(value, expected):
    """Regression (issue 21): memory "1Pi" raised KeyError: 'Pi' when the container was planned."""
    from pydantic import TypeAdapter

    assert TypeAdapter(Memory).validate_python(value) == value
    assert memory_bytes(value) == expected


def test_cpu_quantities_convert_exactly():
    assert [cpu_nanos(c) for c in ("1m", "250m", "1.5", "2", "0.001")] == [
        10**6, 25 * 10**7, 15 * 10**8, 2 * 10**9, 10**6]
    for bad in ("0", "0m", "-1", "1.2345", "1k", ""):
        with pytest.raises(ValueError):
            check_cpu(bad)
    for bad in ("12XB", "0", "1Zi", "1e3", ""):
        with pytest.raises(ValueError):
            check_memory(bad)


def test_a_full_runtime_configuration_with_roles_is_accepted():
    app = Application(**APP, components=[component(
        runtime={"env": {"DATABASE_HOST": "db.lan", "LOG_LEVEL": "info"}, "env_files": ["shop-api-env"],
                 "secret_files": [{"secret_block": "shop-db-password", "path": "/run/secrets/db-password"}],
                 "volumes": [{"source": "shop-data", "target": "/var/lib/shop"},
                             {"source": "/srv/shop/uploads", "target": "/uploads", "read_only": True}],
                 "restart_policy": "on-failure", "init": True, "networks": ["traefik"],
                 "labels": {"traefik.http.routers.shop.rule": "Host(`shop.example.com`) && PathPrefix(`/api`)"}},
        roles=[{"name": "service", "ingress": {"host": "shop.example.com", "tls_secret": "shop-tls"},
                "autoscale": {"min_replicas": 2, "max_replicas": 6, "cpu_percent": 60}},
               {"name": "batch", "kind": "batch", "runtime": {"args": ["node", "dist/batch.js"]},
                "schedule": "30 3 * * *"},
               {"name": "migrate", "kind": "batch", "runtime": {"args": ["node", "dist/migrate.js"]}}])])
    api = app.component("api")
    assert [r.name for r in api.run_roles()] == ["service", "batch", "migrate"]
    batch = api.runtime.merged(api.role("batch").runtime)
    assert batch.args == ["node", "dist/batch.js"] and batch.env["LOG_LEVEL"] == "info" and batch.init is True
    assert Application(**APP, components=[component()]).component("api").run_roles()[0].name == "service"


@pytest.mark.parametrize("extra, field", [
    ({"runtime": {"env": {"1BAD": "x"}}}, "runtime.env.1BAD"),
    ({"runtime": {"env": {"DB-HOST": "x"}}}, "runtime.env.DB-HOST"),
    ({"runtime": {"env_files": ["Not A Block"]}}, "runtime.env_files.0"),
    ({"runtime": {"secret_files": [{"secret_block": "pw", "path": "relative/pw"}]}}, "runtime.secret_files.0.path"),
    ({"runtime": {"volumes": [{"source": "/srv/../etc", "target": "/data"}]}}, "runtime.volumes.0.source"),
    ({"runtime": {"volumes": [{"source": "data", "target": "/"}]}}, "runtime.volumes.0.target"),
    ({"runtime": {"volumes": [{"source": "a", "target": "/d"}, {"source": "b", "target": "/d"}]}}, "runtime"),
    ({"runtime": {"labels": {"org.opsflow.version": "x"}}}, "runtime.labels.org.opsflow.version"),
    ({"runtime": {"restart_policy": "sometimes"}}, "runtime.restart_policy"),
    ({"roles": [{"name": "web", "ingress": {"host": "not a host"}}]}, "roles.0.ingress.host"),
    ({"roles": [{"name": "web", "ingress": {"host": "10.0.0.1"}}]}, "roles.0.ingress.host"),
    ({"roles": [{"name": "web", "autoscale": {"min_replicas": 5, "max_replicas": 2}}]}, "roles.0.autoscale"),
    ({"roles": [{"name": "job", "kind": "batch", "schedule": "61 * * * *"}]}, "roles.0.schedule"),
    ({"roles": [{"name": "job", "kind": "batch", "ingress": {"host": "a.example.com"}}]}, "roles.0"),
    ({"roles": [{"name": "web", "schedule": "@daily"}]}, "roles.0"),
    ({"roles": [{"name": "web"}, {"name": "web"}]}, "roles"),
])
def test_bad_runtime_input_is_rejected_naming_the_field(extra, field):
    with pytest.raises(ValidationError) as info:
        Application(**APP, components=[component(**extra)])
    assert f"components.0.{field}" in errors_for(info.value), errors_for(info.value)


def test_docker_host_compose_and_allowed_paths_fields():
    node = DockerHostTarget(name="edge-1", base_url="unix:///run/docker.sock", allowed_host_paths=["/srv/apps/"],
                            compose_project="shop", compose_file="/srv/apps/shop/docker-compose.yml")
    assert node.allowed_host_paths == ["/srv/apps"]
    with pytest.raises(ValidationError, match="compose_file needs compose_project"):
        DockerHostTarget(name="edge-1", base_url="unix:///run/docker.sock", compose_file="/srv/x.yml")
    with pytest.raises(ValidationError) as info:
        DockerHostTarget(name="edge-1", base_url="unix:///run/docker.sock", allowed_host_paths=["srv"])
    assert "allowed_host_paths.0" in errors_for(info.value)


def test_merged_runtime_overrides_and_replaces_mounts_at_the_same_path():
    base = RuntimeConfig(env={"A": "1", "B": "2"}, volumes=[{"source": "data", "target": "/d"}], args=["serve"],
                         networks=["traefik"])
    over = RuntimeConfig(env={"B": "3"}, volumes=[{"source": "other", "target": "/d"}], networks=["traefik", "db"])
    merged = base.merged(over)
    assert merged.env == {"A": "1", "B": "3"} and [v.source for v in merged.volumes] == ["other"]
    assert merged.args == ["serve"] and merged.networks == ["traefik", "db"]
