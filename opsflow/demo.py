"""``opsflow demo``: the stack, the GitOps deployments, and a pull request then its merge on the sample shop.

The flows run as deployments on the ``vault-build`` worker, exactly as a webhook would start
them, so every step is visible in the Prefect UI. No forge is reachable from here, so the
demo reports to the run's artifacts only (the PR comment's text is the run's summary).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from opsflow.errors import OpsflowError
from opsflow.samples import SHOP_SOURCE, SampleRepo, save_shop_blocks
from opsflow.stack import Stack, StackConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_APP = "shop"
DEPLOYMENTS = {
    "gitops-pr/demo": ("flows/gitops_pr.py:gitops_pr", "Pull request: build, store and test the shop."),
    "gitops-merge/demo": ("flows/gitops_merge.py:gitops_merge", "Merge: the PR's artifact becomes a pushed image."),
    "smoke-image/demo": ("flows/smoke.py:smoke_image", "Builds a busybox image and pushes it (engine check)."),
}


def git_version() -> str:
    """The project's git SHA, the version every deployment carries."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unversioned"


def deploy_demo_flows(work_pool: str = "vault-build") -> list[str]:
    """Create or update the demo deployments on ``work_pool``; returns their names."""
    from prefect import flow

    for name, (entrypoint, description) in DEPLOYMENTS.items():
        loaded = flow.from_source(source=str(PROJECT_ROOT), entrypoint=entrypoint)
        loaded.deploy(name=name.split("/")[1], work_pool_name=work_pool, version=git_version(),
                      tags=["opsflow", "demo"], description=description, build=False, push=False,
                      print_next_steps=False, ignore_warnings=True)
    return list(DEPLOYMENTS)


def publish_sample(cfg: StackConfig) -> tuple[str, str, str]:
    """The sample shop as a fresh git repository under the stack home: a PR branch and its merge.

    Returns the clone URL, the PR head SHA and the merge SHA. The source is the same every
    time, so a second demo finds the artifacts of the first one and builds nothing.
    """
    root = cfg.home / "demo" / "shop-repo"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    repo = SampleRepo(root)
    repo.write("README.md", "# shop\n\nThe opsflow sample shop.\n")
    repo.commit("initial")
    shutil.copytree(SHOP_SOURCE, repo.work, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("node_modules", "dist", ".test-build", "junit.xml", ".env"))
    head = repo.commit("Add the shop's backend and frontend", branch="feature/shop")
    return repo.url, head, repo.merge("feature/shop", message="Merge pull request #1 from feature/shop")


def components_table(run_id) -> list[dict]:
    """The ``*-components`` table artifact a GitOps run left."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    for artifact in artifacts:
        if artifact.key and artifact.key.endswith("-components"):
            return artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)
    raise OpsflowError(f"flow run {run_id} left no components table")


def run_step(cfg: StackConfig, deployment: str, parameters: dict, timeout: float = 1200) -> dict:
    """Run ``deployment`` on its worker; its state, UI URL and components table."""
    from prefect.deployments import run_deployment

    started = time.monotonic()
    run = run_deployment(deployment, parameters=parameters, timeout=timeout)
    url = f"{cfg.url(cfg.prefect_port)}/runs/flow-run/{run.id}"
    if run.state is None or not run.state.is_completed():
        state = run.state.name if run.state else "unknown"
        raise OpsflowError(f"{deployment} ended {state}: {run.state.message if run.state else ''}; see {url}")
    return {"id": str(run.id), "url": url, "rows": components_table(run.id),
            "seconds": round(time.monotonic() - started, 1)}


def run_demo(cfg: StackConfig) -> dict:
    """The whole demo; prints what a person wants to see and returns it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    Stack(cfg).up()
    with temporary_settings({PREFECT_API_URL: cfg.prefect_api_url}):
        names = deploy_demo_flows()
        print(f"deployments {', '.join(names)} registered on work pool vault-build")
        url, head, merge_sha = publish_sample(cfg)
        save_shop_blocks(url, name=DEMO_APP)
        print(f"sample repository: {url}\n  pull request #1 head {head[:12]}, merge commit {merge_sha[:12]}")
        pr = run_step(cfg, "gitops-pr/demo", {"app": DEMO_APP, "pr": 1, "sha": head})
        print(f"\nPR pipeline  ({pr['seconds']}s)  {pr['url']}")
        for row in pr["rows"]:
            reused = " (reused)" if row["artifact_reused"] else ""
            print(f"  {row['component']:9} artifact {row['artifact_key']}{reused}  {row['artifact_size']} bytes  "
                  f"tests {row['tests_passed']} passed, {row['tests_failed']} failed")
        merge = run_step(cfg, "gitops-merge/demo", {"app": DEMO_APP, "sha": merge_sha, "branch": "main", "pr": 1})
        print(f"\nmerge pipeline  ({merge['seconds']}s)  {merge['url']}")
        for row in merge["rows"]:
            print(f"  {row['component']:9} image {row['image_ref']}  tags {row['image_tags']}")
    print(f"\nPrefect UI: {cfg.url(cfg.prefect_port)}")
    return {"pr": pr, "merge": merge, "head": head, "merge_sha": merge_sha}


# --- MLOps demo (issue 7): call run_mlops_demo(cfg) after run_demo, or on its own -------------------------
def run_mlops_demo(cfg: StackConfig) -> dict:
    """PR #1 (first model, comment on the forge emulation), its merge (version registered, aliases moved),
    then PR #2 with worse params: "does not beat champion". Returns the comments and the registered version."""
    import sys

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from blocks import ObjectStore
    from flows.mlops_merge import mlops_merge
    from flows.mlops_pr import mlops_pr
    from opsflow.samples import ml_sample_repo, save_ml_blocks

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.forge_emulator import ForgeEmulator

    Stack(cfg).up()
    forge = ForgeEmulator().start()
    try:
        with temporary_settings({PREFECT_API_URL: cfg.prefect_api_url}):
            root = cfg.home / "demo" / "ml-repo"
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            repo = ml_sample_repo(root, ObjectStore.load("opsflow-data"), "dvc/ml-iris-demo")
            forge.block("github").save("demo-forge", overwrite=True)
            save_ml_blocks(repo.url, name="ml-iris", forge_repo="demo/ml-iris")
            common = {"app": "ml-iris", "forge_block": "demo-forge"}
            repo.write("params.yaml", f"train:\n  C: 1.0\n  max_iter: 200\n# demo {time.time_ns()}\n")
            head = repo.commit("PR #1: train the model", branch="pr-1")
            pr1 = mlops_pr(pr=1, sha=head, **common)
            print(f"PR #1: {pr1['verdict']}\n{forge.comments('github', 'demo/ml-iris', 1)[0]['body']}\n")
            merge = mlops_merge(sha=repo.merge("pr-1"), pr=1, **common)
            print(f"merge: model ml-iris version {merge['version']} registered; champion moved: {merge['champion']}\n")
            repo.write("params.yaml", "train:\n  C: 0.0005\n  max_iter: 200\n")
            pr2 = mlops_pr(pr=2, sha=repo.commit("PR #2: tiny C", branch="pr-2"), **common)
            print(f"PR #2: {pr2['verdict']}\n{forge.comments('github', 'demo/ml-iris', 2)[0]['body']}")
            return {"pr1": pr1, "merge": merge, "pr2": pr2}
    finally:
        forge.stop()
