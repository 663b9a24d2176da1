"""Runtime configuration on Docker hosts without an engine: container specs, secrets as placeholders,
.env parsing, the checks a plan makes against the engine before anything stops, roles of one image."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from pydantic import SecretStr

from blocks import Application, ContainerRegistry
from blocks.application import DeployMethod, RoleKind, RuntimeConfig
from opsflow.core.errors import InvalidInput
from tasks.deploy.docker_host import secret_archive
from tasks.deploy.plan import ComponentRelease, docker_container_specs
from tasks.deploy.runtime import (
    RuntimeValues,
    describe,
    docker_problems,
    host_path_problems,
    parse_env_text,
    placeholder_env,
)

IMAGE = "127.0.0.1:5000/shop-api@sha256:" + "d" * 64
RUNTIME = RuntimeConfig(env={"LOG_LEVEL": "info"}, env_files=["shop-env"],
                        secret_files=[{"secret_block": "db-pw", "path": "/run/secrets/db-password"}],
                        volumes=[{"source": "shop-data", "target": "/data"},
                                 {"source": "/srv/shop", "target": "/srv", "read_only": True}],
                        command=["/bin/busybox"], args=["httpd", "-f"], restart_policy="on-failure", init=True,
                        labels={"traefik.enable": "true"}, networks=["traefik"])
VALUES = RuntimeValues(secret_env={"DB_PASSWORD": SecretStr("hunter2-long")},
                       files={"/run/secrets/db-password": (SecretStr("pw-file-value"), 0o444)},
                       names={"shop-env": ["DB_PASSWORD"]}, fingerprint="sha256:abcdefabcdef")


def release(**extra) -> ComponentRelease:
    return ComponentRelease(**{"app": "shop", "component": "api", "image": IMAGE, "version": "v1", "ports": [8080],
                               "runtime": RUNTIME, **extra})


def test_container_specs_carry_the_runtime_and_the_plan_shows_no_secret():
    [spec] = docker_container_specs(release(), "bridge", colour="blue", env=VALUES.env(RUNTIME))
    assert spec["name"] == "shop-api-blue-0" and spec["network"] == "opsflow-shop"
    assert spec["environment"] == {"LOG_LEVEL": "info", "DB_PASSWORD": "hunter2-long"}
    assert spec["entrypoint"] == ["/bin/busybox"] and spec["command"] == ["httpd", "-f"] and spec["init"] is True
    assert spec["restart_policy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert spec["volumes"] == {"shop-data": {"bind": "/data", "mode": "rw"},
                               "/srv/shop": {"bind": "/srv", "mode": "ro"}}
    assert spec["labels"]["traefik.enable"] == "true" and spec["labels"]["org.opsflow.run-role"] == "service"
    assert spec["networks"] == ["traefik"] and spec["secret_files"] == ["/run/secrets/db-password"]
    shown = docker_container_specs(release(), "bridge", colour="blue", env=placeholder_env(RUNTIME, VALUES))
    text = json.dumps([shown, describe(RUNTIME, VALUES)])
    assert "hunter2-long" not in text and "pw-file-value" not in text
    assert "<secret shop-env sha256:abcdefabcdef>" in text and "DB_PASSWORD" in text


def test_a_secret_file_goes_into_the_container_as_a_tar_with_its_mode():
    with tarfile.open(fileobj=io.BytesIO(secret_archive(VALUES.files))) as tar:
        [member] = tar.getmembers()
        assert member.name == "run/secrets/db-password" and member.mode == 0o444
        assert tar.extractfile(member).read() == b"pw-file-value"
    assert VALUES.redact("token hunter2-long and pw-file-value") == "token *** and ***"


def test_env_files_parse_and_errors_never_show_a_value():
    text = "# comment\nexport A=1\nB='two words' \nC=\"x=y\"\nD=plain # trailing comment\nE=\nF='a # b' # note\n"
    assert parse_env_text(text, "f") == {"A": "1", "B": "two words", "C": "x=y", "D": "plain", "E": "",
                                         "F": "a # b"}
    with pytest.raises(InvalidInput, match=r"f, line 2: the variable name") as info:
        parse_env_text("A=1\n1BAD=topsecret\n", "f")
    assert "topsecret" not in str(info.value)
    with pytest.raises(InvalidInput, match="line 1: not KEY=VALUE"):
        parse_env_text("justasecretvalue\n", "f")


@pytest.mark.parametrize("cpu, memory, problem", [
    ("1m", "256Mi", "cpu 1m is below the engine's minimum of 10m"),
    ("64", "256Mi", "cpu 64 is more than edge-1 has (2 CPUs)"),
    ("250m", "1k", "memory 1k is below the engine's minimum of 6Mi"),
    ("250m", "1Pi", "memory 1Pi is more than edge-1 has"),
])
def test_limits_the_engine_refuses_are_found_in_the_plan(cpu, memory, problem):
    """Issue 18: cpu=1m, cpu=64 on 2 CPUs and memory=1k failed at container create, after the old container stopped."""
    problems = docker_problems(cpu, memory, {"NCPU": 2, "MemTotal": 8 * 2**30}, "components[api]", "edge-1")
    assert [p for p in problems if problem in p], problems
    assert docker_problems("250m", "256Mi", {"NCPU": 2, "MemTotal": 8 * 2**30}, "c", "edge-1") == []


def test_host_paths_must_be_under_the_targets_allowed_roots():
    assert host_path_problems(RUNTIME, ["/srv"], "components[api].runtime", "edge-1") == []
    [problem] = host_path_problems(RUNTIME, ["/srv/other", "/sr"], "components[api].runtime", "edge-1")
    assert problem.startswith("components[api].runtime.volumes[1]: host path /srv/shop is not under")
    assert "set allowed_host_paths" in host_path_problems(RUNTIME, [], "c", "edge-1")[0]


def test_one_image_in_two_roles_resolves_to_two_releases_with_their_own_commands(monkeypatch):
    from tasks.deploy import release as release_module

    monkeypatch.setattr(release_module.lookup_image, "fn", lambda registry, repository, version: "sha256:" + "e" * 64)
    app = Application(name="shop", repository="https://git.lan/shop.git", components=[{
        "name": "backend", "ports": [8080], "health_check": {"path": "/healthz", "deadline_s": 30},
        "runtime": {"env": {"MODE": "service"}, "args": ["node", "dist/server.js"]},
        "roles": [{"name": "service"},
                  {"name": "batch", "kind": "batch", "cpu": "1", "runtime": {"env": {"MODE": "batch"},
                                                                            "args": ["node", "dist/batch.js"]}}]}])
    registry = ContainerRegistry(url="http://127.0.0.1:5000")
    service, batch = release_module.resolve_release(registry, app, "backend", "v1", None, None, "512Mi",
                                                       DeployMethod.rolling, env={"EXTRA": "1"})
    assert (service.base_name, batch.base_name) == ("shop-backend", "shop-backend-batch")
    assert service.runtime.args == ["node", "dist/server.js"] and batch.runtime.args == ["node", "dist/batch.js"]
    assert service.runtime.env == {"MODE": "service", "EXTRA": "1"} and batch.runtime.env["MODE"] == "batch"
    assert batch.kind == RoleKind.batch and batch.ports == [] and batch.health_path is None
    assert (service.cpu, batch.cpu, batch.memory) == ("250m", "1", "512Mi")
    [only] = release_module.resolve_release(registry, app, "backend", "v1", None, None, None,
                                               DeployMethod.rolling, roles=["batch"])
    assert only.role == "batch" and only.image == service.image


def test_ssh_targets_refuse_runtime_configuration_they_cannot_carry():
    from tasks.deploy.release import check_target

    with pytest.raises(InvalidInput, match=r"components\[api\]: runtime configuration and batch roles need"):
        check_target([release()], "ssh", "host-1", None, None)
    plain = release(runtime=RuntimeConfig())
    assert check_target([plain], "ssh", "host-1", None, None) == []
