"""``opsflow demo``: the stack, the GitOps deployments, and a pull request then its merge on the sample shop;
then the MLOps pipeline on the ML sample (two pull requests and a merge).

The GitOps flows run as deployments on the ``vault-build`` worker, exactly as a webhook would start
them, so every step is visible in the Prefect UI. No forge is reachable from here, so the GitOps
demo reports to the run's artifacts only (the PR comment's text is the run's summary); the MLOps
demo posts its comments and statuses to the local forge emulation and prints them.
"""

from __future__ import annotations

import json
import shutil
import time

from blocks import names
from flows.gitops_merge import gitops_merge
from flows.gitops_pr import gitops_pr
from opsflow.core.errors import OpsflowError
from opsflow.deploy import deploy_all
from opsflow.samples import SHOP_SOURCE, SampleRepo, save_shop_blocks
from opsflow.stack import Stack, StackConfig

DEMO_APP = "shop"


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
    """Run ``deployment`` on its worker; its state, UI URL and components table.

    The end of the run is heard from the server's event stream (``prefect.flow_runs.wait_for_flow_run``), not
    by ``run_deployment``'s polling (every 5 s by default: on average 2.5 s late per step)."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import FlowRunWaitTimeout
    from prefect.flow_runs import wait_for_flow_run
    from prefect.utilities.asyncutils import run_coro_as_sync

    started = time.monotonic()
    created = run_deployment(deployment, parameters=parameters, timeout=0)
    url = f"{cfg.url(cfg.prefect_port)}/runs/flow-run/{created.id}"
    try:
        run = run_coro_as_sync(wait_for_flow_run(created.id, timeout=int(timeout)))
    except FlowRunWaitTimeout:
        raise OpsflowError(f"{deployment} did not end within {timeout:.0f} s; see {url}") from None
    if run.state is None or not run.state.is_completed():
        state = run.state.name if run.state else "unknown"
        raise OpsflowError(f"{deployment} ended {state}: {run.state.message if run.state else ''}; see {url}")
    return {"id": str(run.id), "url": url, "rows": components_table(run.id),
            "seconds": round(time.monotonic() - started, 1)}


def run_demo(cfg: StackConfig) -> dict:
    """The whole demo; prints what a person wants to see and returns it."""
    from prefect.settings import temporary_settings

    Stack(cfg).up()
    with temporary_settings(cfg.client_settings()):
        applied = deploy_all(cfg.prefect_api_url, with_kubernetes=False, say=lambda line: None,
                             unless_applied=True)
        print(f"{len(applied)} deployments of deployments/prefect.yaml applied (work pools {names.BUILD_POOL}, "
              f"{names.EDGE_POOL})")
        url, head, merge_sha = publish_sample(cfg)
        save_shop_blocks(url, name=DEMO_APP)
        print(f"sample repository: {url}\n  pull request #1 head {head[:12]}, merge commit {merge_sha[:12]}")
        pr = run_step(cfg, f"{gitops_pr.name}/{names.DEFAULT_DEPLOYMENT}", {"app": DEMO_APP, "pr": 1, "sha": head})
        print(f"\nPR pipeline  ({pr['seconds']}s)  {pr['url']}")
        for row in pr["rows"]:
            reused = " (reused)" if row["artifact_reused"] else ""
            print(f"  {row['component']:9} artifact {row['artifact_key']}{reused}  {row['artifact_size']} bytes  "
                  f"tests {row['tests_passed']} passed, {row['tests_failed']} failed")
        merge = run_step(cfg, f"{gitops_merge.name}/{names.DEFAULT_DEPLOYMENT}",
                         {"app": DEMO_APP, "sha": merge_sha, "branch": "main", "pr": 1})
        print(f"\nmerge pipeline  ({merge['seconds']}s)  {merge['url']}")
        for row in merge["rows"]:
            print(f"  {row['component']:9} image {row['image_ref']}  tags {row['image_tags']}")
    print(f"\nPrefect UI: {cfg.url(cfg.prefect_port)}")
    return {"pr": pr, "merge": merge, "head": head, "merge_sha": merge_sha}


# --- MLOps demo (issue 7) -------------------------------------------------------------------------------
ML_APP, ML_FORGE_REPO = "ml-iris", "demo/ml-iris"


def _aliases(model: str) -> dict[str, str]:
    """``alias -> version`` of ``model`` in the MLflow registry."""
    from blocks import MlflowServer

    with MlflowServer.load(names.MLFLOW).get_client() as client:
        return dict(sorted(client.get_registered_model(model).aliases.items()))


def _reset_demo_model(model: str) -> None:
    """Delete the demo's registered model, so every demo starts with no champion (like the fresh sample repos)."""
    from mlflow.exceptions import MlflowException

    from blocks import MlflowServer

    with MlflowServer.load(names.MLFLOW).get_client() as client:
        try:
            client.delete_registered_model(model)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise


def run_mlops_demo(cfg: StackConfig) -> dict:
    """PR #1 (comment on the forge emulation), its merge (version registered, aliases moved), then
    PR #2 with worse params: "does not beat champion". Prints what to look at; returns the results.

    The flows run in this process (the forge emulation lives here too), so their runs are in the
    Prefect UI under the ``mlops-pr`` and ``mlops-merge`` flows. The demo's registered model is
    deleted first, so every demo starts with no champion.
    """
    from prefect.settings import temporary_settings

    from blocks import ObjectStore
    from flows.mlops_merge import mlops_merge
    from flows.mlops_pr import mlops_pr
    from opsflow.samples import ml_sample_repo, save_ml_blocks
    from opsflow.stack.forge_emulator import ForgeEmulator

    Stack(cfg).up()
    forge = ForgeEmulator().start()
    try:
        with temporary_settings(cfg.client_settings()):
            root = cfg.home / "demo" / "ml-repo"
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            store = ObjectStore.load(names.DATA_STORE)
            repo = ml_sample_repo(root, store, "dvc/ml-iris-demo")
            forge.block("github").save("demo-forge", overwrite=True)
            save_ml_blocks(repo.url, name=ML_APP, forge_repo=ML_FORGE_REPO)
            _reset_demo_model(ML_APP)
            common = {"app": ML_APP, "forge_block": "demo-forge"}
            print(f"\nMLOps: sample repository {repo.url} (data tracked by DVC in s3://{store.bucket}/dvc/ml-iris-demo)")
            # A fresh tree each demo, so the merge finds this demo's PR run (a re-run reuses nothing by mistake).
            repo.write("params.yaml", f"train:\n  C: 1.0\n  max_iter: 200\n# demo {time.time_ns()}\n")
            head = repo.commit("PR #1: train the model", branch="pr-1")
            pr1 = mlops_pr(pr=1, sha=head, **common)
            _print_pr(forge, 1, head, pr1)
            merge_sha = repo.merge("pr-1")
            merge = mlops_merge(sha=merge_sha, pr=1, **common)
            aliases = _aliases(ML_APP)
            print(f"\nmerge {merge_sha[:12]}: model {ML_APP} version {merge['version']} registered from MLflow run "
                  f"{merge['run_id']}; champion moved: {'yes' if merge['champion'] else 'no'}")
            print("  aliases: " + ", ".join(f"{a} -> v{v}" for a, v in aliases.items()))
            predicted = _predict_with_champion(ML_APP, repo.work / "data" / "valid.csv")
            print(f"  mlflow.pyfunc.load_model('models:/{ML_APP}@champion').predict(first 5 rows of data/valid.csv)"
                  f" = {predicted}")
            repo.write("params.yaml", "train:\n  C: 0.0005\n  max_iter: 200\n")
            worse = repo.commit("PR #2: tiny C", branch="pr-2")
            pr2 = mlops_pr(pr=2, sha=worse, **common)
            _print_pr(forge, 2, worse, pr2)
            print(f"\nMLflow UI: {cfg.url(cfg.mlflow_port)}  (model {ML_APP}: Models tab)\n"
                  f"Prefect UI: {cfg.url(cfg.prefect_port)}  (flows mlops-pr, mlops-merge)")
            return {"pr1": pr1, "merge": merge, "pr2": pr2, "aliases": aliases, "predicted": predicted,
                    "comments": {n: forge.comments("github", ML_FORGE_REPO, n) for n in (1, 2)},
                    "statuses": {n: forge.statuses("github", ML_FORGE_REPO, s) for n, s in ((1, head), (2, worse))}}
    finally:
        forge.stop()


def _predict_with_champion(model: str, rows_csv) -> list:
    """The champion, loaded as anyone would (``mlflow.pyfunc.load_model``), predicting the first rows of a CSV."""
    import mlflow.pyfunc
    import numpy as np

    from blocks import MlflowServer

    rows = np.loadtxt(rows_csv, delimiter=",", skiprows=1, max_rows=5)[:, :-1]
    with MlflowServer.load(names.MLFLOW).get_client():  # the block's tracking URI for MLflow's module API
        return np.asarray(mlflow.pyfunc.load_model(f"models:/{model}@champion").predict(rows)).tolist()


def _print_pr(forge, number: int, sha: str, result: dict) -> None:
    status = forge.statuses("github", ML_FORGE_REPO, sha)[-1]
    print(f"\nMLOps PR #{number} ({sha[:12]}): {result['verdict']}\n  MLflow run: {result['url']}\n"
          f"  commit status {status['context']}: {status['state']} ({status['description']})\n"
          f"  PR comment on {ML_FORGE_REPO}#{number}:")
    for line in forge.comments("github", ML_FORGE_REPO, number)[0]["body"].splitlines():
        print(f"    {line}")


def run_all_demos(cfg: StackConfig) -> dict:
    """``opsflow demo``: the GitOps demo, then the MLOps demo."""
    return {"gitops": run_demo(cfg), "mlops": run_mlops_demo(cfg)}
