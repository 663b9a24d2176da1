"""The stack's PostgreSQL: a private cluster from Debian's binaries under the stack home, the Prefect server's database.

On SQLite, Prefect 3.8's server serializes every write: under a burst of webhook deliveries it
answered with ``database is locked`` and 503s (890 in one bench run), and runs went missing.
So ``opsflow stack up`` runs Prefect on PostgreSQL by default:

- the binaries are Debian's (``apt-get install postgresql``; ``make demo``/``make test`` install
  it): the newest ``/usr/lib/postgresql/<version>/bin``. Without them, or with
  ``--database sqlite``, the stack keeps SQLite and says it does not hold concurrent load;
- the cluster lives in ``<home>/postgres/data``, is created once (``initdb``, scram-sha-256) with
  the role ``opsflow`` and the database ``prefect``, and listens on 127.0.0.1 only (no unix socket);
- its password is generated once into ``<home>/postgres/password`` (mode 0600) and reaches
  ``initdb`` as that file and the Prefect server in its environment
  (``PREFECT_API_DATABASE_CONNECTION_URL``), never in a process's arguments;
- run as root, it runs as the ``postgres`` system user (PostgreSQL refuses root), through
  ``runuser`` (``initdb``) or as the server process's user; the stack home is then made traversable
  (0711) for it, its own directory stays 0700. When a directory above the home is not traversable
  by other users (a checkout in a ``mktemp -d`` directory, mode 0700), the cluster lives in
  ``/var/lib/opsflow/postgres-<hash of the home>`` instead and ``<home>/postgres`` is a symlink to
  it: opsflow does not change the modes of directories it does not own.

``OPSFLOW_DATABASE_URL`` (an external PostgreSQL) replaces the private cluster.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from opsflow.core.errors import CommandFailed, ServiceError
from opsflow.core.files import read_or_create_private
from opsflow.core.proc import run

DATABASE = "prefect"
ROLE = "opsflow"
BINDIRS_GLOB = "/usr/lib/postgresql/*/bin"
# Where clusters go whose stack home the postgres user cannot reach (root-owned, traversable, not listable).
OUTSIDE_ROOT = Path("/var/lib/opsflow")


def _reachable_by_others(directory: Path) -> bool:
    """True when every directory from ``/`` down to ``directory`` can be traversed by any user (o+x)."""
    for path in [directory, *directory.parents]:
        try:
            if not path.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def cluster_root(home: Path) -> tuple[Path, Path | None]:
    """Where a stack home's cluster lives, and the symlink in the home that points there (None: it is in the home).

    ``<home>/postgres`` itself, unless we are root and the postgres user could not reach it: then a
    directory under ``/var/lib/opsflow`` named by the home's path, linked from ``<home>/postgres``. A
    cluster once made stays where it is (the link is followed).
    """
    home = home.absolute()
    inside = home / "postgres"
    if inside.is_symlink():
        return Path(os.readlink(inside)), inside
    if os.geteuid() != 0 or inside.exists() or _reachable_by_others(home.parent):
        return inside, None
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
    return OUTSIDE_ROOT / f"postgres-{digest}", inside


def remove_cluster(home: Path) -> None:
    """Delete a stack home's cluster and its data (the server must be stopped), wherever it lives."""
    root, link = cluster_root(home)
    shutil.rmtree(root, ignore_errors=True)
    if link is not None and link.is_symlink():
        link.unlink()


def find_bindir(pattern: str = BINDIRS_GLOB) -> Path | None:
    """The newest installed PostgreSQL's ``bin`` directory (by major version), or None."""
    found = [p for p in Path("/").glob(pattern.lstrip("/")) if (p / "postgres").exists()]
    if not found:
        return None

    def version(path: Path) -> tuple:
        return tuple(int(x) if x.isdigit() else 0 for x in path.parent.name.split("."))

    return max(found, key=version)


@dataclass(frozen=True)
class Cluster:
    """One private PostgreSQL cluster in ``root``, serving on 127.0.0.1:``port``."""

    root: Path
    port: int
    bindir: Path
    link: Path | None = None  # ``<home>/postgres`` when the cluster lives outside the home (``cluster_root``)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def as_postgres(self) -> list[str]:
        """The prefix that runs a command as the ``postgres`` user when we are root (else nothing)."""
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def password(self) -> str:
        """The role's password, generated (mode 0600) on first use."""
        existed = self.password_file.exists()
        value = read_or_create_private(self.password_file, lambda: secrets.token_hex(24) + "\n").strip()
        if not existed:
            self._own(self.password_file)
        return value

    def url(self) -> str:
        """The asyncpg URL Prefect's server connects with (it holds the password: environments only)."""
        return f"postgresql+asyncpg://{ROLE}:{self.password()}@127.0.0.1:{self.port}/{DATABASE}"

    def client_env(self) -> dict[str, str]:
        """What ``psql`` and friends need to connect (the password as ``PGPASSWORD``)."""
        return {"PGPASSWORD": self.password(), "PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": ROLE,
                "PGDATABASE": DATABASE}

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster, the role and the database once; a half-made data directory is made again."""
        if self.initialized():
            return
        if self.link is not None:
            self.root.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._own(self.root)
        if self.link is not None and not self.link.is_symlink():
            self.link.symlink_to(self.root, target_is_directory=True)
        self.password()
        self._check_reachable()
        shutil.rmtree(self.data, ignore_errors=True)
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", ROLE, "--auth=scram-sha-256",
                   f"--pwfile={self.password_file}", "--encoding=UTF8", "--no-instructions"], "initdb")
        # Single-user mode: no server, no network, no password needed to create the database.
        self._run([str(self.bindir / "postgres"), "--single", "-D", str(self.data), "postgres"],
                  "creating the database", stdin=f"CREATE DATABASE {DATABASE} OWNER {ROLE};\n")

    @property
    def server_user(self) -> str | None:
        """The user the server process runs as: ``postgres`` when we are root."""
        return "postgres" if os.geteuid() == 0 else None

    def server_argv(self) -> list[str]:
        # synchronous_commit=off: a crash may lose the last moment of writes, never consistency; a local
        # platform's Prefect server then does not wait on the disk for each state change.
        return [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=200",
                "-c", "synchronous_commit=off"]

    def ready(self) -> bool:
        """True when the server accepts connections (``pg_isready``)."""
        try:
            run([str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)], timeout=10)
        except CommandFailed:
            return False
        return True

    def psql(self, sql: str) -> str:
        """One query's rows, as ``psql -tA`` prints them."""
        return run([str(self.bindir / "psql"), "-tAc", sql], env=self.client_env(), secrets=[self.password()],
                   timeout=60).strip()

    # --- helpers ------------------------------------------------------------------------------

    def _own(self, path: Path) -> None:
        if self.as_postgres:
            shutil.chown(path, "postgres", "postgres")

    def _check_reachable(self) -> None:
        if not self.as_postgres:
            return
        parent = self.root.parent
        parent.chmod(parent.stat().st_mode | 0o111)  # traversable, not listable, for the postgres user
        try:
            run([*self.as_postgres, "test", "-w", str(self.root)], timeout=30)
        except CommandFailed as exc:
            raise ServiceError("postgres", f"the postgres user cannot reach {self.root}: make its parent "
                               "directories traversable (chmod o+x), choose another --home, or use --database sqlite"
                               ) from exc

    def _run(self, argv: list[str], what: str, stdin: str | None = None) -> None:
        try:
            run([*self.as_postgres, *argv], cwd=self.root, timeout=300, stdin_text=stdin, secrets=[self.password()])
        except CommandFailed as exc:
            raise ServiceError("postgres", f"{what} failed", exc.output_tail) from exc
