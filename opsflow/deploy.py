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


def apply_deployments(api_url: str, prefect_file: Path = PREFECT_FILE, project_dir: Path = PROJECT_ROOT) -> str:
    """``prefect deploy --all`` on ``prefect_file``, from the project directory; returns its output."""
    if not prefect_file.is_file():
        raise OpsflowError(f"no deployment file at {prefect_file}")
    prefect = Path(sys.executable).with_name("prefect")
    argv = [str(prefect) if prefect.exists() else "prefect", "--no-prompt", "deploy", "--all",
            "--prefect-file", str(prefect_file)]
    env = {"PREFECT_API_URL": api_url, "OPSFLOW_PROJECT_DIR": str(project_dir),
           "PREFECT_CLI_PROMPT": "false", "PREFECT_UI_URL": api_url.removesuffix("/api")}
    return run(argv, cwd=project_dir, env=env, timeout=600,
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
