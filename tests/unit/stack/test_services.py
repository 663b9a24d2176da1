"""The stack's database choice, the workers' environment and the decision not to restart a worker whose health
cannot be read: without services."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opsflow.core.pids import start_ticks
from opsflow.stack import Stack, StackConfig
from opsflow.stack import services as services_module
from opsflow.stack.services import ServiceSpec, client_env, database_choice, worker_env


def test_postgres_is_the_default_and_sqlite_says_why(monkeypatch, tmp_path):
    monkeypatch.setattr(services_module, "find_bindir", lambda: Path("/usr/lib/postgresql/15/bin"))
    assert database_choice(StackConfig(home=tmp_path)) == ("postgres", "")
    kind, why = database_choice(StackConfig(home=tmp_path, database="sqlite"))
    assert kind == "sqlite" and "does not hold concurrent load" in why
    monkeypatch.setattr(services_module, "find_bindir", lambda: None)
    kind, why = database_choice(StackConfig(home=tmp_path))
    assert kind == "sqlite" and "apt-get install postgresql" in why
    url = "postgresql+asyncpg://u:secret@db/prefect"
    assert database_choice(StackConfig(home=tmp_path, database_url=url))[0] == "external"


def test_the_prefect_server_gets_the_database_url_in_its_environment_only(monkeypatch, tmp_path):
    monkeypatch.setattr(services_module, "find_bindir", lambda: Path("/usr/lib/postgresql/15/bin"))
    cfg = StackConfig(home=tmp_path, postgres_port=15433)
    specs = services_module.build_specs(cfg, {"s3_access_key": "a", "s3_secret_key": "b"}, "unix:///x.sock")
    pg = services_module.cluster(cfg)
    password = pg.password()
    assert oct(pg.password_file.stat().st_mode & 0o777) == "0o600"
    assert password in specs["prefect"].env["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert specs["prefect"].needs == ("postgres",)
    for spec in specs.values():
        assert password not in " ".join(spec.argv), spec.name
        if spec.name.startswith("worker-"):
            assert password not in "".join(spec.env.values()) and spec.clean_env


def test_a_worker_keeps_only_harmless_variables_of_the_caller(tmp_path):
    cfg = StackConfig(home=tmp_path)
    caller = {"PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C.UTF-8", "KUBECONFIG": "/k", "TZ": "UTC",
              "OPSFLOW_DATABASE_URL": "postgresql+asyncpg://u:pw@db/p", "AWS_SECRET_ACCESS_KEY": "s",
              "GITHUB_TOKEN": "t", "PREFECT_API_KEY": "k", "SSH_AUTH_SOCK": "/tmp/agent"}
    env = worker_env(cfg, "unix:///engine.sock", caller)
    assert set(env) == {"PATH", "HOME", "LC_ALL", "KUBECONFIG", "TZ", *client_env(cfg), "DOCKER_HOST",
                        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"}
    assert env["DOCKER_HOST"] == "unix:///engine.sock" and env["PREFECT_API_URL"] == cfg.prefect_api_url


def test_a_running_service_whose_health_cannot_be_read_is_left_running(tmp_path):
    cfg = StackConfig(home=tmp_path, services=("worker-edge",))
    lines: list[str] = []
    stack = Stack(cfg, say=lines.append)
    me = {"pid": os.getpid(), "ticks": start_ticks(os.getpid()), "owned": True}  # a live process, not stopped
    worker = ServiceSpec("worker-edge", ["true"], "http://x", healthy=lambda: False,
                         health_unknown=lambda: "the Prefect API at http://x/api does not answer")
    to_start, recheck = stack._plan(["worker-edge"], {"worker-edge": worker}, {"worker-edge": me}, None)
    assert to_start == [] and recheck == [worker]
    assert "does not answer, so its health cannot be read: not restarting it" in lines[0]
    # Still unreadable after the rest started: left running, and said so.
    assert stack._still_unhealthy(recheck, {"worker-edge": me}) == []
    assert "left running" in lines[-1]


@pytest.mark.parametrize("database", ["mysql", ""])
def test_an_unknown_database_is_refused(database, tmp_path):
    from opsflow.core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="--database must be one of postgres, sqlite"):
        StackConfig(home=tmp_path, database=database)


def test_a_home_the_postgres_user_cannot_reach_keeps_its_cluster_outside_behind_a_link(monkeypatch, tmp_path):
    # A checkout in a `mktemp -d` directory (0700): the postgres user cannot traverse it, and opsflow does not
    # change the modes of directories above its home.
    from opsflow.stack import postgres

    monkeypatch.setattr(postgres, "OUTSIDE_ROOT", tmp_path / "var-lib-opsflow")
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 0)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    home = private / "checkout" / ".opsflow"
    home.mkdir(parents=True)
    assert not postgres._reachable_by_others(private) and postgres._reachable_by_others(Path("/usr/lib"))
    root, link = postgres.cluster_root(home)
    assert link == home / "postgres" and root.parent == tmp_path / "var-lib-opsflow"
    assert root.name.startswith("postgres-") and postgres.cluster_root(private / "other")[0] != root
    root.mkdir(parents=True)
    link.symlink_to(root)
    assert postgres.cluster_root(home) == (root, link)  # once made, it stays where it is
    postgres.remove_cluster(home)
    assert not root.exists() and not link.is_symlink()
    # Reachable (or not root): in the home itself.
    monkeypatch.setattr(postgres, "_reachable_by_others", lambda directory: True)
    assert postgres.cluster_root(home) == (home / "postgres", None)


def test_a_service_whose_need_is_neither_chosen_nor_running_is_refused_before_anything_starts(tmp_path):
    from opsflow.core.errors import InvalidInput

    cfg = StackConfig(home=tmp_path, services=("prefect", "s3"))
    stack = Stack(cfg, say=lambda line: None)
    prefect = ServiceSpec("prefect", ["true"], "http://x", healthy=lambda: False, needs=("postgres",))
    with pytest.raises(InvalidInput, match=r"service prefect needs postgres, .*\(prefect, s3\); add it or use "
                                           "--database sqlite"):
        stack._check_needs(cfg, ["prefect", "s3"], [prefect], {})
    me = {"pid": os.getpid(), "ticks": start_ticks(os.getpid()), "owned": True}
    stack._check_needs(cfg, ["prefect", "s3"], [prefect], {"postgres": me})  # already running: fine
    stack._check_needs(cfg, ["postgres", "prefect"], [prefect], {})  # chosen: started first
