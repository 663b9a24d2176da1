"""What each service of the stack is: how it starts, where it answers, how its health is read."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from blocks import names
from opsflow.core.heartbeats import heartbeat_env
from opsflow.core.prefect_api import basic_auth_header
from opsflow.core.retention import server_retention_env
from opsflow.core.tls import default_context
from opsflow.stack.config import WORK_POOLS, StackConfig, load_credentials
from opsflow.stack.postgres import Cluster, cluster_root, find_bindir
from opsflow.stack.tls import RegistryDoor

#: What a worker keeps of the environment of whoever ran ``opsflow stack up`` (nothing else: not the
#: database URL, not cloud credentials, not tokens; a build inherits its worker's environment).
WORKER_PASS_THROUGH = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "KUBECONFIG"})
#: A run waiting for a deployment's concurrency slot is offered again after this long (Prefect's default is 30 s).
DEPLOYMENT_SLOT_WAIT_S = 5
#: How often the server's cancellation cleanup looks for runs to tidy (Prefect's default is 20 s). Each pass queues,
#: for every flow run cancelled in the last day, a job that looks for its unfinished task runs: on the default stack
#: after two `bench/trigger.py` bursts (400 cancelled runs), the idle server took 50 % of a core and PostgreSQL 33 %.
#: What the pass does is cosmetic here: opsflow's worker kills a cancelled run's process at once (the event stream),
#: a new Cancelling state schedules its own timeout check, and opsflow's flows have no subflows; a cancelled run's
#: task runs still shown running are marked Cancelled within this many seconds instead of 20.
CANCELLATION_CLEANUP_LOOP_S = 300


@dataclass
class ServiceSpec:
    """A service the stack can start: its command, its URL and its health probe."""

    name: str
    argv: list[str]
    url: str
    healthy: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    start_timeout: float = 120.0
    needs: tuple[str, ...] = ()
    binary_hint: str = ""
    #: Called before the process starts (creating a database cluster).
    prepare: Callable[[], None] | None = None
    #: The process gets only ``env`` (and the stack's marker), not the environment of ``stack up``'s caller.
    clean_env: bool = False
    #: The system user the process runs as (None: ours).
    user: str | None = None
    #: Why the health cannot be judged right now (None: it can). A service whose health is unknown is not
    #: restarted: a worker is not unhealthy because the Prefect API is down.
    health_unknown: Callable[[], str | None] | None = None


def _http_ok(url: str, *, ok_below: int = 300, timeout: float = 2.0) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return httpx.get(url, timeout=timeout, verify=default_context()).status_code < ok_below
        except httpx.HTTPError:
            return False

    return probe


def docker_ping(base_url: str, timeout: float = 3.0) -> bool:
    """True when a Docker engine answers ``/_ping`` at ``base_url`` (unix:// or tcp://)."""
    if base_url.startswith("unix://"):
        path = base_url[len("unix://"):]
        if not os.path.exists(path):
            return False
        transport = httpx.HTTPTransport(uds=path)
        url = "http://docker/_ping"
    elif base_url.startswith(("tcp://", "http://")):
        transport = None
        url = "http://" + base_url.split("://", 1)[1].rstrip("/") + "/_ping"
    else:  # ssh:// and the like: let the SDK decide
        try:
            import docker

            return bool(docker.DockerClient(base_url=base_url, timeout=int(timeout)).ping())
        except Exception:  # noqa: BLE001 - any failure means "does not answer"
            return False
    try:
        with httpx.Client(transport=transport, timeout=timeout) as client:
            return client.get(url).status_code == 200
    except (httpx.HTTPError, OSError):
        return False


def external_docker(env: dict[str, str] | None = None) -> str | None:
    """The engine ``DOCKER_HOST`` or the default socket points at, when it answers."""
    env = os.environ if env is None else env
    candidates = [env["DOCKER_HOST"]] if env.get("DOCKER_HOST") else []
    candidates.append("unix:///var/run/docker.sock")
    for url in candidates:
        if docker_ping(url):
            return url
    return None


# Filesystems overlay2 stacks on (the kernel's overlay on ext4/xfs). Elsewhere, e.g. on an
# overlay root inside a container, dockerd needs vfs, which copies every layer in full.
_OVERLAY2_FS = {"ext4", "xfs"}


def docker_storage_driver(data_root: Path) -> str:
    """``overlay2`` where the kernel has overlayfs and ``data_root`` is on ext4/xfs, else ``vfs``;
    ``$OPSFLOW_DOCKER_STORAGE_DRIVER`` decides when set."""
    chosen = os.environ.get("OPSFLOW_DOCKER_STORAGE_DRIVER")
    if chosen:
        return chosen
    try:
        if "overlay" not in Path("/proc/filesystems").read_text().split():
            return "vfs"
        target = str(data_root.resolve())
        fstype, longest = "", -1
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                mount = parts[1].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > longest:
                    fstype, longest = parts[2], len(mount)
    except OSError:
        return "vfs"
    return "overlay2" if fstype in _OVERLAY2_FS else "vfs"


def own_docker_socket(cfg: StackConfig) -> str:
    return f"unix://{cfg.home / 'docker' / 'docker.sock'}"


def _short_exec_root(cfg: StackConfig) -> str:
    # containerd's sockets live under exec-root and unix socket paths are limited to 108 bytes.
    digest = hashlib.sha256(str(cfg.home).encode()).hexdigest()[:10]
    return f"/tmp/opsflow-docker-{digest}"  # noqa: S108 - dockerd creates it 0700; a short path is the point


def database_choice(cfg: StackConfig) -> tuple[str, str]:
    """Where the Prefect server keeps its data: ``("external" | "postgres" | "sqlite", why, when not postgres)``."""
    if cfg.database_url:
        return "external", ""
    if cfg.database == "sqlite":
        return "sqlite", ("the Prefect server runs on SQLite (--database sqlite), which does not hold concurrent load "
                          "(bursts of webhook deliveries, parallel builds): drop --database sqlite for PostgreSQL")
    if find_bindir() is None:
        return "sqlite", ("PostgreSQL is not installed (apt-get install postgresql): the Prefect server runs on "
                          "SQLite, which does not hold concurrent load (bursts of webhook deliveries, parallel builds)")
    return "postgres", ""


def cluster(cfg: StackConfig) -> Cluster:
    """The stack's private PostgreSQL cluster (``<home>/postgres``, or where that links to: ``cluster_root``); the
    binaries must be installed."""
    bindir = find_bindir()
    if bindir is None:
        raise ValueError("PostgreSQL is not installed")
    root, link = cluster_root(cfg.home)
    return Cluster(root, cfg.postgres_port, bindir, link)


#: Where the stack's engine takes its networks' subnets (a /24 each: 256 networks): opsflow's deploys make one
#: network per application (blue-green and surge). Docker's default pools give 31 networks per host, shared
#: by every engine on it, and a stopped engine's bridges keep theirs: the test suite's two stacks used them all
#: up ("could not find an available, non-overlapping IPv4 address pool"). A subnet a host route already covers
#: (a LAN that uses this range) is skipped by Docker.
ADDRESS_POOL = "10.210.0.0/16"


def client_env(cfg: StackConfig) -> dict[str, str]:
    """What every Prefect client the stack starts (the workers) needs to reach the stack's server.

    The one place for client credentials: the server's shared credential (``PREFECT_API_AUTH_STRING``)
    travels in the environment (readable by the same user only), never in a process's arguments.
    """
    return {"PREFECT_HOME": str(cfg.home / "prefect"), **cfg.client_env(),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def worker_env(cfg: StackConfig, docker_url: str, caller_env: dict[str, str] | None = None) -> dict[str, str]:
    """A worker's whole environment: a few harmless variables of the caller's, the client settings, the engine."""
    caller_env = os.environ if caller_env is None else caller_env
    kept = {k: v for k, v in caller_env.items() if k in WORKER_PASS_THROUGH or k.startswith("LC_")}
    kept.setdefault("PATH", os.defpath)
    return {**kept, **client_env(cfg), "DOCKER_HOST": docker_url, **heartbeat_env()}


def build_specs(cfg: StackConfig, creds: dict[str, str], docker_url: str) -> dict[str, ServiceSpec]:
    """Every service of the stack, keyed by name, in start order (``postgres`` only with a private cluster)."""
    py = sys.executable
    home = cfg.home
    s3_url = cfg.url(cfg.s3_port)
    s3_env = {
        "AWS_ACCESS_KEY_ID": creds["s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": creds["s3_secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    prefect_env = client_env(cfg)
    specs: dict[str, ServiceSpec] = {}

    docker_root = home / "docker"
    specs["docker"] = ServiceSpec(
        name="docker",
        argv=[
            "dockerd", f"--storage-driver={docker_storage_driver(home)}", "--bridge=none", "--iptables=false",
            "--ip-masq=false", f"--default-address-pool=base={ADDRESS_POOL},size=24",
            f"--host={own_docker_socket(cfg)}", f"--data-root={docker_root / 'data'}",
            f"--exec-root={_short_exec_root(cfg)}", f"--pidfile={docker_root / 'docker.pid'}",
            "--insecure-registry=127.0.0.0/8",
        ],
        url=docker_url,
        healthy=lambda: docker_ping(docker_url),
        start_timeout=60,
        binary_hint="install Docker (apt-get install docker.io) or set DOCKER_HOST to a running engine",
    )

    if shutil.which("minio"):
        s3_argv = ["minio", "server", str(home / "s3"), "--address", f"{cfg.host}:{cfg.s3_port}",
                   "--console-address", f"{cfg.host}:0"]
        s3_env_extra = {"MINIO_ROOT_USER": creds["s3_access_key"], "MINIO_ROOT_PASSWORD": creds["s3_secret_key"]}
        s3_health = _http_ok(f"{s3_url}/minio/health/live")
    else:  # moto's standalone S3 server stands in for MinIO where no MinIO binary is installed
        s3_argv = [py, "-m", "moto.server", "-H", cfg.host, "-p", str(cfg.s3_port)]
        s3_env_extra = {}
        s3_health = _http_ok(f"{s3_url}/moto-api/data.json")
    specs["s3"] = ServiceSpec("s3", s3_argv, s3_url, s3_health, env=s3_env_extra, port=cfg.s3_port, start_timeout=60)

    registry_bin = shutil.which("registry") or shutil.which("docker-registry") or "docker-registry"
    specs["registry"] = ServiceSpec(
        name="registry",
        argv=[registry_bin, "serve", str(home / "registry" / "config.yml")],
        url=cfg.registry_url,
        healthy=lambda: registry_answers(cfg),
        port=cfg.registry_port,
        start_timeout=30,
        binary_hint="install CNCF distribution (apt-get install docker-registry)",
    )

    # The server runs with the shared credential its clients send (PREFECT_SERVER_API_AUTH_STRING).
    server_env = {**prefect_env, "PREFECT_SERVER_API_AUTH_STRING": prefect_env["PREFECT_API_AUTH_STRING"],
                  **server_retention_env(),  # database vacuum: opsflow.core.retention
                  "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": str(DEPLOYMENT_SLOT_WAIT_S),
                  "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS": str(CANCELLATION_CLEANUP_LOOP_S)}
    database, _ = database_choice(cfg)
    if database == "postgres":
        pg = cluster(cfg)
        specs["postgres"] = ServiceSpec(
            name="postgres", argv=pg.server_argv(), url=f"postgresql://127.0.0.1:{cfg.postgres_port}",
            healthy=pg.ready, port=cfg.postgres_port, start_timeout=60, prepare=pg.init, user=pg.server_user,
            binary_hint="install PostgreSQL (apt-get install postgresql) or use --database sqlite")
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = pg.url()
    elif database == "external":
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = cfg.database_url
    specs["prefect"] = ServiceSpec(
        name="prefect",
        argv=[py, "-m", "prefect", "server", "start", "--host", cfg.host, "--port", str(cfg.prefect_port)],
        url=cfg.url(cfg.prefect_port),
        healthy=_http_ok(f"{cfg.prefect_api_url}/health"),
        env=server_env,
        port=cfg.prefect_port,
        start_timeout=180,
        needs=("postgres",) if database == "postgres" else (),
    )

    specs["mlflow"] = ServiceSpec(
        name="mlflow",
        argv=[
            py, "-m", "mlflow", "server", "--host", cfg.host, "--port", str(cfg.mlflow_port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
            "--serve-artifacts", "--artifacts-destination", "s3://opsflow-mlflow/artifacts",
        ],
        url=cfg.url(cfg.mlflow_port),
        healthy=_http_ok(f"{cfg.url(cfg.mlflow_port)}/health"),
        # No MLflow server jobs (GenAI scorers, trace roll-ups): opsflow uses none, and they start
        # seven Huey consumer processes (~260 MB and a few CPU seconds each) beside the server.
        env={**s3_env, "MLFLOW_S3_ENDPOINT_URL": s3_url, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        port=cfg.mlflow_port,
        start_timeout=240,
        needs=("s3",),
    )

    for pool in WORK_POOLS:
        name = f"worker-{pool}"
        specs[name] = ServiceSpec(
            name=name,
            # The worker type `opsflow`: runs forked from a pre-imported process, started in well under a second.
            argv=[py, "-m", "opsflow.worker", "start", "--pool", pool, "--name", worker_name(pool),
                  "--shutdown-timeout", "10",
                  # An edge worker only deploys: of the libraries runs import (the zygote imports them once
                  # ready), the object store's, Docker's and Kubernetes' (opsflow.worker.config.EDGE_WARM).
                  *(["--warm", "boto3,docker,kubernetes.dynamic"] if pool == names.EDGE_POOL else [])],
            url=f"{cfg.url(cfg.prefect_port)}/work-pools/work-pool/{pool}",
            healthy=lambda pool=pool: worker_online(cfg, pool),
            env=worker_env(cfg, docker_url),
            clean_env=True,
            health_unknown=lambda: api_down(cfg),
            start_timeout=120,
            needs=("prefect",),
        )
    return specs


def worker_name(pool: str) -> str:
    return f"{pool}-{socket.gethostname()}"


def api_down(cfg: StackConfig) -> str | None:
    """Why the Prefect API cannot tell a worker's health now (it does not answer), or None when it answers."""
    if _http_ok(f"{cfg.prefect_api_url}/health", timeout=3)():
        return None
    return f"the Prefect API at {cfg.prefect_api_url} does not answer"


def worker_online(cfg: StackConfig, pool: str) -> bool:
    """True when this host's worker for ``pool`` has sent a heartbeat to the server."""
    try:
        resp = httpx.post(f"{cfg.prefect_api_url}/work_pools/{pool}/workers/filter", json={}, timeout=3,
                          headers=basic_auth_header(cfg.api_auth_string()), verify=default_context())
    except httpx.HTTPError:
        return False
    if resp.status_code != 200:
        return False
    return any(w.get("name") == worker_name(pool) and w.get("status") == "ONLINE" for w in resp.json())


def registry_door(cfg: StackConfig) -> RegistryDoor:
    return RegistryDoor(cfg.home / "registry")


def registry_answers(cfg: StackConfig, timeout: float = 2.0) -> bool:
    """True when the registry answers ``/v2/`` over TLS verified with the stack's CA (401 included: it asks
    for the login, so it is up)."""
    import ssl

    door = registry_door(cfg)
    try:
        context = ssl.create_default_context(cafile=str(door.ca_file))
        return httpx.get(f"{cfg.registry_url}/v2/", timeout=timeout, verify=context).status_code in (200, 401)
    except (httpx.HTTPError, OSError, ssl.SSLError):
        return False


def registry_config(cfg: StackConfig) -> str:
    """The CNCF distribution config: filesystem storage under home, deletes enabled, loopback only, TLS with
    the stack's CA and HTTP Basic logins from its htpasswd file."""
    root = cfg.home / "registry" / "data"
    door = registry_door(cfg)
    return f"""version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
auth:
  htpasswd:
    realm: opsflow-registry
    path: {door.htpasswd_file}
http:
  addr: {cfg.host}:{cfg.registry_port}
  tls:
    certificate: {door.cert_file}
    key: {door.key_file}
  headers:
    X-Content-Type-Options: [nosniff]
"""


def ensure_dirs(cfg: StackConfig) -> None:
    for sub in ("logs", "prefect", "registry/data", "mlflow", "s3", "docker"):
        (cfg.home / sub).mkdir(parents=True, exist_ok=True)
    creds = load_credentials(cfg.home)
    registry_door(cfg).ensure([cfg.host, "localhost"], creds["registry_user"], creds["registry_password"])
    (cfg.home / "registry" / "config.yml").write_text(registry_config(cfg))
    # 0700, or 0711 once a PostgreSQL cluster run by the postgres user lives in it (postgres.Cluster.init):
    # the home stays unlistable, its files keep their own modes.
    Path(cfg.home).chmod(0o711 if (cfg.home / "postgres").exists() and os.geteuid() == 0 else 0o700)
