"""Compose-project edge nodes without an engine: the planned compose file and its diff, secrets kept
out of it, the services a release does not name left as they are, bad input rejected before anything
is written (the rollout against real engines: tests/integration/flows/test_manual_deploy_compose.py)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml
from pydantic import SecretStr

from blocks import DockerHostTarget
from blocks.application import DeployMethod, RuntimeConfig
from opsflow.core.errors import InvalidInput
from tasks.deploy import compose
from tasks.deploy.compose import (
    compose_argv,
    compose_environment,
    env_file_text,
    plan_compose,
    restore_compose,
    write_compose,
)
from tasks.deploy.plan import ComponentRelease
from tasks.deploy.runtime import RuntimeValues

IMAGE = "127.0.0.1:5000/shop-api@sha256:" + "f" * 64
FILE = """version: "2.4"
services:
  api:
    image: 127.0.0.1:5000/shop-api:v1   # the user's comment
    environment:
      - LOG_LEVEL=debug
    ports: ["8080:8080"]
  db:
    image: postgres:16
    volumes: ["/srv/db:/var/lib/postgresql/data"]
"""


@pytest.fixture
def node(tmp_path):
    path = tmp_path / "shop" / "docker-compose.yml"
    path.parent.mkdir()
    path.write_text(FILE)
    return DockerHostTarget(name="edge-1", base_url="unix:///run/docker.sock", compose_project="shop",
                            compose_file=str(path), compose_root=str(tmp_path / "opsflow"))


def release(**extra) -> ComponentRelease:
    runtime = RuntimeConfig(env={"LOG_LEVEL": "info"}, env_files=["shop-env"],
                            secret_files=[{"secret_block": "db-pw", "path": "/run/secrets/db-password"}])
    return ComponentRelease(**{"app": "shop", "component": "api", "image": IMAGE, "version": "v2", "ports": [8080],
                               "cpu": "500m", "memory": "128Mi", "runtime": runtime, **extra})


VALUES = {"api": RuntimeValues(secret_env={"DB_PASSWORD": SecretStr("hunter2-long")},
                               files={"/run/secrets/db-password": (SecretStr("pw-file-value"), 0o444)},
                               names={"shop-env": ["DB_PASSWORD"]}, fingerprint="sha256:abcdefabcdef")}


def test_the_release_sets_its_service_and_leaves_the_others_as_they_are(node, tmp_path):
    change = plan_compose(node, [release()], VALUES)
    doc = yaml.safe_load(change.after)
    assert doc["services"]["db"] == {"image": "postgres:16", "volumes": ["/srv/db:/var/lib/postgresql/data"]}
    api = doc["services"]["api"]
    assert api["image"] == IMAGE and api["environment"] == {"LOG_LEVEL": "info"} and api["ports"] == ["8080:8080"]
    assert api["cpus"] == 0.5 and api["mem_limit"] == 128 * 2**20 and api["labels"]["org.opsflow.version"] == "v2"
    secrets = tmp_path / "opsflow" / "shop" / "secrets" / "api"
    assert api["env_file"] == [str(secrets / "env-abcdefabcdef")]
    assert f"{secrets}/run_secrets_db-password-abcdefabcdef:/run/secrets/db-password:ro" in api["volumes"]
    for text in (change.after, change.diff):
        assert "hunter2-long" not in text and "pw-file-value" not in text
    assert "-    image: 127.0.0.1:5000/shop-api:v1" in change.diff and f"+    image: {IMAGE}" in change.diff
    assert change.services == ["api"]

    write_compose(change)
    assert yaml.safe_load(node.compose_file and open(node.compose_file).read()) == doc
    env_file = secrets / "env-abcdefabcdef"
    assert env_file.read_text() == "DB_PASSWORD='hunter2-long'\n" and env_file.stat().st_mode & 0o777 == 0o600
    assert secrets.stat().st_mode & 0o777 == 0o700
    restore_compose(change)
    assert open(node.compose_file).read() == FILE  # byte for byte, comments included


def test_a_v3_file_gets_deploy_limits(node):
    open(node.compose_file, "w").write(FILE.replace('"2.4"', '"3.8"'))
    api = yaml.safe_load(plan_compose(node, [release()], VALUES).after)["services"]["api"]
    assert api["deploy"]["resources"]["limits"] == {"cpus": "0.5", "memory": str(128 * 2**20)}
    assert "cpus" not in api


def test_an_owned_project_is_written_from_nothing(tmp_path):
    node = DockerHostTarget(name="edge-1", base_url="unix:///run/docker.sock", compose_project="shop",
                            compose_root=str(tmp_path), network_mode="bridge")
    change = plan_compose(node, [release(runtime=RuntimeConfig(init=True))], {})
    assert change.before is None and change.path == tmp_path / "shop" / "docker-compose.yml"
    api = yaml.safe_load(change.after)["services"]["api"]
    assert api["ports"] == ["8080:8080"] and api["restart"] == "unless-stopped" and api["init"] is True
    green = plan_compose(node, [release(method=DeployMethod.blue_green)], {})
    assert "ports" not in yaml.safe_load(green.after)["services"]["api"]  # opsflow's proxy publishes them


@pytest.mark.parametrize("text, message", [
    ("services: [api\n", "does not parse as YAML"),
    ("version: '2'\n", "has no 'services' mapping"),
    (FILE.replace("  api:", "  backend:"), r"has no service 'api' \(components\[api\].compose_service"),
])
def test_a_compose_file_that_does_not_parse_or_lacks_the_service_is_refused(node, text, message):
    open(node.compose_file, "w").write(text)
    with pytest.raises(InvalidInput, match=message):
        plan_compose(node, [release()], VALUES)
    assert open(node.compose_file).read() == text


def test_blue_green_needs_the_service_to_leave_its_ports_to_the_proxy(node):
    with pytest.raises(InvalidInput, match="service 'api' publishes ports itself"):
        plan_compose(node, [release(method=DeployMethod.blue_green)], VALUES)


def test_env_files_quote_values_and_refuse_what_compose_cannot_carry():
    assert env_file_text({"B": "x y $HOME", "A": "1"}, "w") == "A='1'\nB='x y $HOME'\n"
    with pytest.raises(InvalidInput, match="A's value has a quote or a line break"):
        env_file_text({"A": "it's"}, "w")


def test_compose_commands_name_the_engine_and_project_and_carry_no_secret(node):
    v1 = compose_argv(node.model_copy(update={"compose_command": ["docker-compose"]}), "up", "-d", "api")
    assert v1 == ["docker-compose", "-H", "unix:///run/docker.sock", "-p", "shop", "-f", node.compose_file, "up",
                  "-d", "api"]
    v2 = compose_argv(node.model_copy(update={"compose_command": ["docker", "compose"]}), "up")
    assert v2[:5] == ["docker", "-H", "unix:///run/docker.sock", "compose", "-p"]


def _script(tmp_path, python: str, distutils: bool) -> str:
    """A compose-like script whose shebang names ``<tmp>/bin/<python>``, with or without its stdlib distutils."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    interpreter = tmp_path / "bin" / python
    interpreter.touch()
    if distutils:
        (tmp_path / "lib" / python / "distutils").mkdir(parents=True)
        (tmp_path / "lib" / python / "distutils" / "__init__.py").touch()
    script = tmp_path / f"compose-{python}"
    script.write_text(f"#!{interpreter}\nimport compose\n")
    script.chmod(0o755)
    return str(script)


def test_compose_v1_skips_setuptools_distutils_shim_only_where_the_stdlib_has_distutils(tmp_path, monkeypatch):
    compose._v1_environment.cache_clear()
    monkeypatch.delenv("SETUPTOOLS_USE_DISTUTILS", raising=False)
    assert compose_environment([_script(tmp_path, "python3.11", True), "up"]) == {"SETUPTOOLS_USE_DISTUTILS": "stdlib"}
    assert compose_environment([_script(tmp_path, "python3.10", False), "up"]) == {}  # no stdlib distutils there
    assert compose_environment([_script(tmp_path, "python3.12", True), "up"]) == {}  # 3.12 removed it
    assert compose_environment(["docker", "compose", "up"]) == {}  # the plugin is Go
    assert compose_environment([str(tmp_path / "missing"), "up"]) == {}
    compose._v1_environment.cache_clear()
    monkeypatch.setenv("SETUPTOOLS_USE_DISTUTILS", "local")  # the user's own choice stands
    (tmp_path / "own").mkdir()
    assert compose_environment([_script(tmp_path / "own", "python3.9", True), "up"]) == {}
    compose._v1_environment.cache_clear()


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose is not installed")
def test_the_installed_docker_compose_runs_with_its_environment(monkeypatch):
    compose._v1_environment.cache_clear()
    monkeypatch.delenv("SETUPTOOLS_USE_DISTUTILS", raising=False)
    env = compose_environment(["docker-compose"])
    done = subprocess.run(["docker-compose", "version", "--short"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() and not done.stderr, done.stderr
    compose._v1_environment.cache_clear()
