"""``opsflow apply``: the work pools, the edge nodes' queues, every deployment of deployments/prefect.yaml
pinned to one opsflow commit, and the notification automations.

Idempotent: pools and queues are created when missing, deployments and automations are created
or updated. The deployments themselves are applied by Prefect's own ``prefect deploy --all``, so
``deployments/prefect.yaml`` stays the one place they are declared; this module gives it the
commit (:class:`CodeSource`) that every deployment pulls and is versioned with.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from blocks import names
from opsflow.core.errors import CommandFailed, InvalidInput, OpsflowError, RemoteUnavailable
from opsflow.core.paths import INSTALLED, PREFECT_FILE, PROJECT_ROOT
from opsflow.core.proc import run

#: The pools served by opsflow's worker type (``opsflow``), with their descriptions.
OPSFLOW_POOLS = {names.BUILD_POOL: "GitOps and MLOps runs on the build server",
                 names.EDGE_POOL: "deploys; one queue per edge node"}


def edge_nodes() -> list[str]:
    """Names of the edge nodes: every DockerHostTarget block except the build server's engine."""
    from prefect.client.orchestration import get_client

    from blocks import DockerHostTarget

    with get_client(sync_client=True) as client:
        docs = client.read_block_documents_by_type(block_type_slug="opsflow-docker-host", include_secrets=False)
    nodes = []
    for doc in docs:
        if doc.name != names.BUILD_ENGINE:
            nodes.append(DockerHostTarget.load(doc.name).name)
    return sorted(set(nodes))


def ensure_work_pools(with_kubernetes: bool = True) -> list[str]:
    """Create the work pools (type ``opsflow``, with its job template), one ``edge`` queue per edge node and
    the automation that crashes runs whose heartbeats stopped, when missing; says what it did."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from opsflow.core.heartbeats import ensure_zombie_automation, heartbeat_env
    from opsflow.core.pools import ensure_work_pool, job_template, with_env_defaults

    done = []
    with get_client(sync_client=True) as client:
        for name, text in OPSFLOW_POOLS.items():
            done.append(ensure_work_pool(client, name, description=f"opsflow: {text}"))
        if with_kubernetes:
            # Prefect's Kubernetes worker runs these; its runs send heartbeats as often as opsflow's do.
            template = with_env_defaults(job_template("kubernetes"), heartbeat_env())
            done.append(ensure_work_pool(client, names.KUBERNETES_POOL, worker_type="kubernetes", template=template,
                                         description="opsflow: runs as Kubernetes jobs on the cluster of a "
                                                     "KubernetesTarget"))
        for node in edge_nodes():
            try:
                client.read_work_queue_by_name(node, work_pool_name=names.EDGE_POOL)
                done.append(f"edge queue {node}: exists")
            except ObjectNotFound:
                client.create_work_queue(name=node, work_pool_name=names.EDGE_POOL,
                                         description=f"runs on the worker of edge node {node}")
                done.append(f"edge queue {node}: created")
        done.append(ensure_zombie_automation(client))
    return done


@dataclass(frozen=True)
class CodeSource:
    """The opsflow code the deployments pull: a full commit SHA and a clone URL every worker can reach."""

    repository: str
    commit: str
    dirty: bool = False

    @property
    def version(self) -> str:
        """The deployments' version: the commit, abbreviated as git does in logs (12 hex digits)."""
        return self.commit[:12]

    def env(self) -> dict[str, str]:
        """The variables ``deployments/prefect.yaml`` reads."""
        return {"OPSFLOW_REPOSITORY": self.repository, "OPSFLOW_COMMIT": self.commit, "OPSFLOW_VERSION": self.version}


def _origin_url(root: Path) -> str:
    try:
        return run(["git", "-C", str(root), "config", "--get", "remote.origin.url"], timeout=30).strip()
    except CommandFailed:
        return ""


def _is_dirty(root: Path) -> bool:
    try:
        return bool(run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], timeout=60).strip())
    except CommandFailed:
        return False


def code_source(repository: str | None = None, commit: str | None = None, root: Path = PROJECT_ROOT) -> CodeSource:
    """The commit to apply and where workers clone it from.

    The commit: ``commit``, else this checkout's HEAD (or the commit an installed wheel was built
    from). The repository: ``repository``, else ``$OPSFLOW_REPOSITORY``, else the wheel's recorded
    ``origin``, else this checkout's ``origin``, else this checkout's own directory (a local stack,
    whose workers share this machine).

    Raises:
        InvalidInput: no commit can be told, or the clone URL carries credentials.
    """
    from opsflow.core.version import FULL_SHA, build_info, own_commit, strip_credentials

    commit = commit or own_commit(root)
    if not commit or not FULL_SHA.match(commit):
        found = commit or f"no git checkout at {root}"
        raise InvalidInput(f"cannot tell which opsflow commit to apply ({found}): run from a git checkout of opsflow "
                           "or a wheel built from one, or pass --commit <full sha>")
    repository = repository or os.environ.get("OPSFLOW_REPOSITORY") or (
        build_info().get("repository", "") if INSTALLED else strip_credentials(_origin_url(root)) or str(root))
    if not repository:
        raise InvalidInput("no repository to clone opsflow from: pass --repository <git URL every worker can clone>")
    if strip_credentials(repository) != repository:
        raise InvalidInput("--repository must not carry credentials (they would be stored in every deployment): "
                           "give the workers a deploy key or a GIT_CONFIG_* http.extraHeader instead")
    dirty = bool(build_info().get("dirty")) if INSTALLED else _is_dirty(root)
    return CodeSource(repository=repository, commit=commit, dirty=dirty)


def apply_deployments(api_url: str, source: CodeSource, prefect_file: Path = PREFECT_FILE,
                      project_dir: Path = PROJECT_ROOT, only: list[str] | None = None) -> str:
    """``prefect deploy --all`` (or ``--name`` each of ``only``) on ``prefect_file``; returns its output."""
    from prefect.settings import get_current_settings

    if not prefect_file.is_file():
        raise OpsflowError(f"no deployment file at {prefect_file}: reinstall opsflow (the wheel carries it)")
    # Prefect's own CLI, run as ``python -m opsflow.deploy`` (:func:`prefect_cli`): its API clients share one TLS
    # context (measured: 2.2 s of the command's 7.8 s of CPU building one per client, nine deployments).
    argv = [sys.executable, "-m", "opsflow.deploy", "--no-prompt", "deploy", "--prefect-file", str(prefect_file)]
    if only:
        for name in only:
            argv += ["--name", name]
    else:
        argv.append("--all")
    env = {"PREFECT_API_URL": api_url, "PREFECT_CLI_PROMPT": "false", "PREFECT_UI_URL": api_url.removesuffix("/api"),
           **source.env()}
    # The server's auth string (this process's PREFECT_API_AUTH_STRING setting) goes to the command in its
    # environment, never in its arguments.
    auth = get_current_settings().api.auth_string
    if auth is not None:
        env["PREFECT_API_AUTH_STRING"] = auth.get_secret_value()
    return run(argv, cwd=project_dir, env=env, timeout=900, secrets=[env.get("PREFECT_API_AUTH_STRING", "")],
               hint="check deployments/prefect.yaml and that the Prefect server is up")


def declared_deployments(prefect_file: Path = PREFECT_FILE) -> list[str]:
    """The names of the deployments ``prefect_file`` declares (a name may repeat across flows)."""
    import yaml

    return [d["name"] for d in (yaml.safe_load(prefect_file.read_text()) or {}).get("deployments") or []]


def applied_at(source: CodeSource, prefect_file: Path = PREFECT_FILE) -> bool:
    """Whether every deployment of ``prefect_file`` is on the server at ``source``'s version, from a clean
    checkout (an uncommitted change to the file could differ from what was applied)."""
    from prefect.client.orchestration import get_client

    if source.dirty:
        return False
    declared = declared_deployments(prefect_file)
    with get_client(sync_client=True) as client:
        current = [d.name for d in client.read_deployments() if d.version == source.version]
    return all(current.count(name) >= declared.count(name) for name in set(declared))


def check_api(api_url: str, deadline_s: float = 60) -> None:
    """Fail before any side effect when the Prefect API is not there; a slow or busy one is waited for.

    Connection refused fails at once (no server listens); timeouts and 5xx answers are retried
    until ``deadline_s``. Authenticated as Prefect's client is (``opsflow.core.prefect_api``).
    """
    import time

    import httpx

    from opsflow.core.prefect_api import api_client

    deadline = time.monotonic() + deadline_s
    problem = ""
    with api_client(timeout=15) as client:
        while True:
            try:
                response = client.get("health")
            except httpx.ConnectError:
                raise RemoteUnavailable(f"the Prefect API at {api_url} does not answer (ConnectError): "
                                        "start the server, or pass --api-url / set PREFECT_API_URL") from None
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            else:
                if response.status_code in (401, 403):
                    raise InvalidInput(f"the Prefect API at {api_url} refused the request ({response.status_code}): "
                                       "set PREFECT_API_AUTH_STRING to the server's auth string")
                if response.status_code < 400:
                    return
                if response.status_code < 500:
                    raise InvalidInput(f"the Prefect API at {api_url} answered {response.status_code} to /health: "
                                       "is that the API URL (ending in /api)?")
                problem = f"HTTP {response.status_code}"
            if time.monotonic() > deadline:
                raise RemoteUnavailable(f"the Prefect API at {api_url} did not answer /health within "
                                        f"{deadline_s:.0f} s ({problem}): check the server and its log, then try again")
            time.sleep(1)


def deploy_all(api_url: str, with_kubernetes: bool = True, say=print, repository: str | None = None,
               commit: str | None = None, notify_block: str | None = None, only: list[str] | None = None,
               unless_applied: bool = False) -> list[str]:
    """Pools, queues, deployments pinned to one commit, then automations; returns the deployments' full names.

    Args:
        api_url: the Prefect API (``http://host:4200/api``).
        with_kubernetes: also create the ``kubernetes`` work pool.
        say: where progress lines go.
        repository, commit: the code every deployment pulls (:func:`code_source` picks defaults).
        notify_block: ``<block type slug>/<name>`` of a Prefect notification block: failed or crashed
            runs and runs held for approval are sent there (:mod:`opsflow.notify`).
        only: apply just these deployments (``flow/deployment``), e.g. after changing one.
        unless_applied: leave the deployments as they are when every one of them is already applied at this
            commit from a clean checkout (:func:`applied_at`; the demo run again).
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        check_api(api_url)
        source = code_source(repository, commit)
        if source.dirty:
            say(f"warning: the checkout has uncommitted changes; workers run commit {source.version} without them")
        notify = None
        if notify_block:
            from opsflow.notify import notification_block

            notify = notification_block(notify_block)  # a wrong name fails here, before anything changes
        for line in ensure_work_pools(with_kubernetes):
            say(line)
        if unless_applied and not only and applied_at(source):
            say(f"deployments: already applied at commit {source.version}")
        else:
            apply_deployments(api_url, source, only=only)
        with get_client(sync_client=True) as client:
            flows = {f.id: f.name for f in client.read_flows()}
            applied = sorted(f"{flows.get(d.flow_id, '?')}/{d.name}" for d in client.read_deployments()
                             if not only or f"{flows.get(d.flow_id, '?')}/{d.name}" in only)
        if notify is not None:
            from opsflow.notify import apply_automations

            for line in apply_automations(notify):
                say(line)
    for name in applied:
        say(f"deployment {name}: applied at commit {source.version} from {source.repository}")
    return applied


def prefect_cli(argv: list[str]) -> int:
    """Prefect's CLI (``prefect <argv>``) in this process, with its API clients sharing one TLS context
    (``opsflow.worker.prefect_adapter.share_client_tls_contexts``)."""
    from opsflow.worker.prefect_adapter import share_client_tls_contexts

    share_client_tls_contexts()
    from prefect.cli import app

    sys.argv = ["prefect", *argv]
    try:
        app()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(prefect_cli(sys.argv[1:]))
