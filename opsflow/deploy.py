"""``opsflow deploy``: the work pools, the edge nodes' queues and every deployment of deployments/prefect.yaml.

Idempotent: pools and queues are created when missing, deployments are created or updated.
The deployments themselves are applied by Prefect's own ``prefect deploy --all``, so
``deployments/prefect.yaml`` stays the one place they are declared.
"""

from __future__ import annotations

import sys
from pathlib import Path

from blocks import names
from opsflow.core.errors import OpsflowError
from opsflow.core.paths import PROJECT_ROOT
from opsflow.core.proc import run

PREFECT_FILE = PROJECT_ROOT / "deployments" / "prefect.yaml"
PROCESS_POOLS = {names.BUILD_POOL: "GitOps and MLOps runs on the build server",
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
    """Create the work pools and one ``edge`` queue per edge node when missing; says what it did."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    done = []
    pools = {name: ("process", ProcessWorker.get_default_base_job_template(), text)
             for name, text in PROCESS_POOLS.items()}
    if with_kubernetes:
        from prefect_kubernetes.worker import KubernetesWorker

        pools[names.KUBERNETES_POOL] = ("kubernetes", KubernetesWorker.get_default_base_job_template(),
                                  "runs as Kubernetes jobs on the cluster of a KubernetesTarget")
    with get_client(sync_client=True) as client:
        for name, (kind, template, text) in pools.items():
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type=kind, base_job_template=template,
                                                       description=f"opsflow: {text}"))
                done.append(f"work pool {name} ({kind}): created")
            except ObjectAlreadyExists:
                done.append(f"work pool {name} ({kind}): exists")
        for node in edge_nodes():
            try:
                client.read_work_queue_by_name(node, work_pool_name=names.EDGE_POOL)
                done.append(f"edge queue {node}: exists")
            except ObjectNotFound:
                client.create_work_queue(name=node, work_pool_name=names.EDGE_POOL,
                                         description=f"runs on the worker of edge node {node}")
                done.append(f"edge queue {node}: created")
    return done


def apply_deployments(api_url: str, prefect_file: Path = PREFECT_FILE, project_dir: Path = PROJECT_ROOT) -> str:
    """``prefect deploy --all`` on ``prefect_file``, from the project directory; returns its output.

    The server's auth string (this process's ``PREFECT_API_AUTH_STRING`` setting) goes to the command in
    its environment, never in its arguments."""
    from prefect.settings import get_current_settings

    if not prefect_file.is_file():
        raise OpsflowError(f"no deployment file at {prefect_file}")
    prefect = Path(sys.executable).with_name("prefect")
    argv = [str(prefect) if prefect.exists() else "prefect", "--no-prompt", "deploy", "--all",
            "--prefect-file", str(prefect_file)]
    env = {"PREFECT_API_URL": api_url, "OPSFLOW_PROJECT_DIR": str(project_dir),
           "PREFECT_CLI_PROMPT": "false", "PREFECT_UI_URL": api_url.removesuffix("/api")}
    auth = get_current_settings().api.auth_string
    if auth is not None:
        env["PREFECT_API_AUTH_STRING"] = auth.get_secret_value()
    return run(argv, cwd=project_dir, env=env, timeout=600, secrets=[env.get("PREFECT_API_AUTH_STRING", "")],
               hint="check deployments/prefect.yaml and that the Prefect server is up")


def deploy_all(api_url: str, with_kubernetes: bool = True, say=print) -> list[str]:
    """Pools, queues, then deployments; returns the deployments' full names."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        for line in ensure_work_pools(with_kubernetes):
            say(line)
        apply_deployments(api_url)
        with get_client(sync_client=True) as client:
            flows = {f.id: f.name for f in client.read_flows()}
            applied = sorted(f"{flows.get(d.flow_id, '?')}/{d.name}" for d in client.read_deployments())
    for name in applied:
        say(f"deployment {name}: applied")
    return applied
