"""``opsflow demo``: bring the stack up, register the demo deployment, run it on a worker."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from opsflow.errors import OpsflowError
from opsflow.stack import Stack, StackConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SMOKE_DEPLOYMENT = "smoke-image/demo"


def git_version() -> str:
    """The project's git SHA, the version every deployment carries."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unversioned"


def deploy_smoke(work_pool: str = "vault-build") -> str:
    """Create or update the smoke flow's deployment on ``work_pool``; returns its id."""
    from prefect import flow

    smoke = flow.from_source(source=str(PROJECT_ROOT), entrypoint="flows/smoke.py:smoke_image")
    deployment_id = smoke.deploy(
        name="demo", work_pool_name=work_pool, version=git_version(), tags=["opsflow", "smoke"],
        description="Builds a busybox image with the build server's engine and pushes it to the registry.",
        build=False, push=False, print_next_steps=False, ignore_warnings=True,
    )
    return str(deployment_id)


def run_smoke(cfg: StackConfig, tag: str, timeout: float = 600) -> dict:
    """Run the smoke deployment on its worker and return the pushed image and the run's UI URL."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.deployments import run_deployment

    from flows.smoke import RESULT_ARTIFACT_KEY

    started = time.monotonic()
    run = run_deployment(SMOKE_DEPLOYMENT, parameters={"tag": tag}, timeout=timeout)
    url = f"{cfg.url(cfg.prefect_port)}/runs/flow-run/{run.id}"
    if run.state is None or not run.state.is_completed():
        state = run.state.name if run.state else "unknown"
        raise OpsflowError(f"the smoke run ended {state}; see its logs at {url}")
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[RESULT_ARTIFACT_KEY]), flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    if not artifacts:
        raise OpsflowError(f"the smoke run completed but left no {RESULT_ARTIFACT_KEY!r} artifact; see {url}")
    row = artifacts[0].data
    row = (row if isinstance(row, list) else __import__("json").loads(row))[0]
    return {**row, "run_url": url, "seconds": round(time.monotonic() - started, 1)}


def run_demo(cfg: StackConfig) -> dict:
    """The whole demo; prints what a person wants to see and returns it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    Stack(cfg).up()
    with temporary_settings({PREFECT_API_URL: cfg.prefect_api_url}):
        deploy_smoke()
        print(f"deployment {SMOKE_DEPLOYMENT} registered on work pool vault-build")
        result = run_smoke(cfg, tag=f"demo-{int(time.time())}")
    print(f"pushed image : {result['ref']}")
    print(f"digest       : {result['digest']}")
    print(f"Prefect run  : {result['run_url']}  ({result['seconds']}s)")
    return result
