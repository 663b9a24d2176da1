"""Where the stack keeps its state and which ports it listens on."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from blocks import names
from opsflow.core.errors import InvalidInput
from opsflow.core.prefect_api import AUTH_FILE, STATE_FILE, ensure_auth_string

#: Every service of the stack, in start order (a service waits for those it ``needs``). Add one here and in
#: ``services.build_specs``.
SERVICES = ("docker", "s3", "registry", "postgres", "prefect", "mlflow", "worker-vault-build", "worker-edge")
DATABASES = ("postgres", "sqlite")
BUCKETS = (names.ARTIFACT_STORE, names.DATA_STORE, "opsflow-mlflow")  # object store blocks are named as their buckets
WORK_POOLS = (names.BUILD_POOL, names.EDGE_POOL)
_PORT_FIELDS = ("prefect_port", "s3_port", "registry_port", "mlflow_port", "postgres_port")


@dataclass(frozen=True)
class StackConfig:
    """Settings of one local stack. Everything it writes lives under ``home``."""

    home: Path = field(default_factory=lambda: Path(".opsflow"))
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    s3_port: int = 9000
    registry_port: int = 5000
    mlflow_port: int = 5001
    postgres_port: int = 5433
    services: tuple[str, ...] = SERVICES
    #: The Prefect server's database: ``postgres`` (a private cluster under ``home``; SQLite when the
    #: binaries are missing) or ``sqlite``.
    database: str = "postgres"
    # An external PostgreSQL URL for the Prefect server, instead of the private cluster. It holds a
    # password, so it only ever comes from the environment (OPSFLOW_DATABASE_URL) and is passed on in
    # the environment.
    database_url: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).absolute())
        for name in _PORT_FIELDS:
            port = getattr(self, name)
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise InvalidInput(f"{name.replace('_', ' ')} {port!r} is not a port number (1-65535)")
        unknown = [s for s in self.services if s not in SERVICES]
        if unknown:
            raise InvalidInput(f"unknown service(s) {unknown}; known: {', '.join(SERVICES)}")
        if self.database not in DATABASES:
            raise InvalidInput(f"--database must be one of {', '.join(DATABASES)}, not {self.database!r}")
        if self.database_url and not self.database_url.startswith(("postgresql", "sqlite")):
            raise InvalidInput("OPSFLOW_DATABASE_URL must be a postgresql+asyncpg:// (or sqlite+aiosqlite://) URL")

    @classmethod
    def from_env(cls, **overrides) -> StackConfig:
        """Defaults, then ``OPSFLOW_*`` environment variables, then explicit overrides (None = unset)."""
        values: dict = {}
        env = os.environ
        if env.get("OPSFLOW_HOME"):
            values["home"] = Path(env["OPSFLOW_HOME"])
        for name in _PORT_FIELDS:
            var = f"OPSFLOW_{name.upper()}"
            if env.get(var):
                try:
                    values[name] = int(env[var])
                except ValueError as exc:
                    raise InvalidInput(f"{var}={env[var]!r} is not a port number") from exc
        if env.get("OPSFLOW_DATABASE_URL"):
            values["database_url"] = env["OPSFLOW_DATABASE_URL"]
        if env.get("OPSFLOW_DATABASE"):
            values["database"] = env["OPSFLOW_DATABASE"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def running(cls, **overrides) -> StackConfig:
        """``from_env``, with the ports of the stack already running under that home (a running stack keeps
        the ports it was started with): what a client started in a fresh shell connects to."""
        cfg = cls.from_env(**overrides)
        try:
            ports = json.loads(cfg.state_file.read_text()).get("ports") or {}
        except (OSError, ValueError):
            return cfg
        known = {k: int(v) for k, v in ports.items() if k in _PORT_FIELDS}
        return replace(cfg, **known) if known else cfg

    def with_services(self, services: tuple[str, ...]) -> StackConfig:
        return replace(self, services=services)

    # Derived locations -------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.home / STATE_FILE

    @property
    def auth_file(self) -> Path:
        """The Prefect server's auth string (``PREFECT_SERVER_API_AUTH_STRING``), mode 0600."""
        return self.home / AUTH_FILE

    def api_auth_string(self) -> str:
        """The shared credential of this stack's Prefect server, generated on first use."""
        return ensure_auth_string(self.auth_file)

    def client_env(self) -> dict[str, str]:
        """What a Prefect client of this stack needs in its environment: the API URL and the auth string."""
        return {"PREFECT_API_URL": self.prefect_api_url, "PREFECT_API_AUTH_STRING": self.api_auth_string()}

    def client_settings(self) -> dict[str, str]:
        """The same as ``temporary_settings`` updates (for code that already imported Prefect)."""
        return {"api.url": self.prefect_api_url, "api.auth_string": self.api_auth_string()}

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.url(self.prefect_port)}/api"

    @property
    def registry_url(self) -> str:
        """The registry's API: TLS with the stack's own CA, logins from its htpasswd file."""
        return f"https://{self.host}:{self.registry_port}"

    def ports(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in _PORT_FIELDS}


def load_credentials(home: Path) -> dict[str, str]:
    """The stack's generated S3 and registry credentials, created (mode 0600) on first use; a file from an
    older stack gains the registry login."""
    path = home / "credentials.json"
    creds = json.loads(path.read_text()) if path.exists() else {}
    missing = {
        "s3_access_key": lambda: "opsflow" + secrets.token_hex(6),
        "s3_secret_key": lambda: secrets.token_urlsafe(30),
        "registry_user": lambda: "opsflow",
        "registry_password": lambda: secrets.token_urlsafe(24),
    }
    if all(key in creds for key in missing):
        return creds
    creds.update({key: make() for key, make in missing.items() if key not in creds})
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(creds, fh)
    os.replace(tmp, path)
    return creds
