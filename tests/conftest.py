"""Test harness: one local stack per session, on its own ports and its own state directory.

The Prefect client settings are put in the environment here, before anything imports
Prefect, so every test talks to the session's server and never to a developer's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opsflow.core.prefect_api import AUTH_FILE, ensure_auth_string  # the ground: imports no Prefect

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"
_BASE = int(os.environ.get("OPSFLOW_TEST_PORT_BASE", "24000"))
TEST_PORTS = {"prefect_port": _BASE + 200, "s3_port": _BASE + 900, "registry_port": _BASE + 500,
              "mlflow_port": _BASE + 501, "postgres_port": _BASE + 250}

# Each port base gets its own state directory, so two sessions (other ports) can run side by side.
_SUFFIX = "" if _BASE == 24000 else f"-{_BASE}"
STACK_HOME = OUTPUT / f"stack{_SUFFIX}"
(OUTPUT / f"prefect-client{_SUFFIX}").mkdir(parents=True, exist_ok=True)
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{TEST_PORTS['prefect_port']}/api"
# The session's server runs with auth on (PREFECT_SERVER_API_AUTH_STRING, the stack's 0600 file): every
# client of it, this process and whatever it starts, authenticates with the same string.
os.environ["PREFECT_API_AUTH_STRING"] = ensure_auth_string(STACK_HOME / AUTH_FILE)
os.environ.pop("PREFECT_API_KEY", None)
os.environ["PREFECT_HOME"] = str(OUTPUT / f"prefect-client{_SUFFIX}")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# A test that reads a run's logs waits for them to reach the server: send them every 0.5 s, not every 2 s.
os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.5")
for var in ("OPSFLOW_HOME", "OPSFLOW_DATABASE_URL", "OPSFLOW_DATABASE", *(f"OPSFLOW_{k.upper()}" for k in TEST_PORTS)):
    os.environ.pop(var, None)

from opsflow.stack import (  # noqa: E402 - after the Prefect settings above are in the environment
    Stack,
    StackConfig,
    processes,
)
from opsflow.stack.postgres import remove_cluster  # noqa: E402
from opsflow.worker.prefect_adapter import share_client_tls_contexts  # noqa: E402

# The flows the tests call run in this process as they run in a worker's run process: Prefect's API clients
# share one verified TLS context instead of loading the CA bundle for each new client. Profiled on a 2-core
# machine, ``ssl.create_default_context`` was 28 % of this process's CPU, half of it Prefect's clients.
share_client_tls_contexts()

# Fixtures shared across the tree (tests/support); loaded after the environment above is set.
pytest_plugins = [
    "tests.support.forge",
    "tests.support.run_logger",
    "tests.support.token_registry",
]

# The session's Prefect server runs on PostgreSQL, `opsflow stack up`'s default (a private cluster under the
# stack's home): on SQLite, Prefect 3.8's server now and then holds its write lock for a whole busy timeout (60 s;
# every other write waits, then fails), and answers lost write races with 503s its client sleeps 2 s on. That
# made the suite slow and flaky. tests/integration/stack/test_databases.py runs a pipeline on a SQLite-backed
# server too (`--database sqlite`). OPSFLOW_TEST_DATABASE=sqlite runs the whole suite on SQLite.
TEST_DATABASE = os.environ.get("OPSFLOW_TEST_DATABASE", "postgres")
if TEST_DATABASE not in ("postgres", "sqlite"):
    raise SystemExit(f"OPSFLOW_TEST_DATABASE must be postgres or sqlite, not {TEST_DATABASE!r}")


def pytest_report_header(config):
    return f"opsflow: the test stack's Prefect server runs on {TEST_DATABASE} (OPSFLOW_TEST_DATABASE)"


@pytest.fixture(scope="session")
def stack_config() -> StackConfig:
    """The session's stack; ``OPSFLOW_TEST_SERVICES`` (comma-separated, set by tests.support.shards for a shard
    that runs no MLflow test) starts only those services."""
    services = tuple(s for s in os.environ.get("OPSFLOW_TEST_SERVICES", "").split(",") if s)
    chosen = {"services": services} if services else {}
    return StackConfig(home=STACK_HOME, **TEST_PORTS, database=TEST_DATABASE, **chosen)


@pytest.fixture(scope="session")
def stack(stack_config: StackConfig):
    """The whole local platform, brought up once for the session and stopped after it."""
    OUTPUT.mkdir(exist_ok=True)
    if not processes.marked_pids(stack_config.home):
        # Nothing of an earlier session runs: start from an empty Prefect database and fresh logs,
        # as CI does, so runs left by earlier sessions neither slow the server nor leak into results.
        home = stack_config.home
        for stale in [*(home / "prefect").glob("prefect.db*"), *(home / "logs").glob("*.log")]:
            stale.unlink()
        remove_cluster(home)
    platform = Stack(stack_config, say=lambda line: print(f"[stack] {line}"))
    try:
        platform.up()
        yield stack_config
    finally:
        _remove_deployed_apps(stack_config)
        platform.down()
        left = processes.marked_pids(stack_config.home)
        assert not left, f"stack down left processes behind: {left}"


def _remove_deployed_apps(cfg: StackConfig) -> None:
    """The applications the session deployed on the stack's own engine, and their networks: the next session
    starts from an empty Prefect database, and a stopped engine's networks keep their subnets (and bridges)
    taken. Never on an engine the stack did not start (``$DOCKER_HOST``, ``/var/run/docker.sock``)."""
    import contextlib
    import json

    import docker

    from opsflow.stack.services import own_docker_socket

    with contextlib.suppress(Exception):
        url = json.loads(cfg.state_file.read_text())["services"]["docker"]["url"]
        if url != own_docker_socket(cfg):
            return
        client = docker.DockerClient(base_url=url, timeout=60)
        for container in client.containers.list(all=True, filters={"label": "org.opsflow.app"}):
            container.remove(force=True)
        client.networks.prune()
        client.close()


@pytest.fixture(scope="session")
def stack_database(stack: StackConfig):
    """The session stack's PostgreSQL cluster (``opsflow.stack.postgres.Cluster``: ``psql``, ``password()``), or
    None on SQLite."""
    if TEST_DATABASE == "sqlite":
        return None
    from opsflow.stack.services import cluster

    return cluster(stack)


@pytest.fixture(scope="session")
def docker_url(stack: StackConfig) -> str:
    import json

    return json.loads(stack.state_file.read_text())["services"]["docker"]["url"]


@pytest.fixture(scope="session")
def docker_client(docker_url: str):
    import docker

    client = docker.DockerClient(base_url=docker_url, timeout=120)
    yield client
    client.close()
