"""A private PostgreSQL cluster for tests: Debian's binaries, its own data directory and port,
scram-sha-256 with a random password that lives only in a 0600 file and in environments."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.net import free_port

BINDIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


@contextlib.contextmanager
def private_postgres(database: str = "prefect") -> Iterator[dict]:
    """Start a cluster with one database; yields ``url`` (asyncpg, for Prefect), ``port``,
    ``bindir``, ``env`` (with PGPASSWORD) and ``password``. Stopped and deleted afterwards."""
    if not BINDIRS:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql; make setup does)")
    bindir = BINDIRS[-1]
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="opsflow-pg-"))
    password = secrets.token_hex(16)
    (root / "pw").write_text(password + "\n")
    (root / "pw").chmod(0o600)
    if as_postgres:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    port = free_port()
    env = {**os.environ, "PGPASSWORD": password}
    subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(root / "data"), "-U", "opsflow",
                    "--auth=scram-sha-256", f"--pwfile={root / 'pw'}"], check=True, capture_output=True, timeout=120)
    log = open(root / "log", "wb")
    # fsync off: a test cluster is thrown away, and fsyncs compete with the Docker engines' disk writes.
    server = subprocess.Popen([*as_postgres, str(bindir / "postgres"), "-D", str(root / "data"), "-p", str(port),
                               "-k", str(root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                               "-c", "synchronous_commit=off", "-c", "max_connections=200"],
                              stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("PostgreSQL did not start:\n" + (root / "log").read_text()[-2000:])
            time.sleep(0.3)
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "opsflow", database],
                       env=env, check=True, capture_output=True, timeout=60)
        yield {"url": f"postgresql+asyncpg://opsflow:{password}@127.0.0.1:{port}/{database}", "port": port,
               "bindir": bindir, "env": env, "password": password}
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def psql(pg: dict, sql: str) -> str:
    """One query's rows, as ``psql -tA`` prints them."""
    done = subprocess.run([str(pg["bindir"] / "psql"), "-h", "127.0.0.1", "-p", str(pg["port"]), "-U", "opsflow",
                           "-d", "prefect", "-tAc", sql], env=pg["env"], capture_output=True, text=True, check=True,
                          timeout=60)
    return done.stdout.strip()
