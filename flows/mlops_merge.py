"""MLOps, merge side: register the run the PR produced for the merged tree; move the aliases."""

from __future__ import annotations

from prefect import flow

from blocks import Application, GitForge, MlflowServer
from blocks.fields import Name, Sha
from flows.gitops_common import report_key
from flows.mlops_pr import CONTEXT, report_failure
from tasks.git import clone_repo
from tasks.mlops import (
    Candidate,
    compare_to_champion,
    dvc_hashes,
    find_champion,
    find_run_by_tree,
    load_ml_config,
    register_model,
    run_tags,
)
from tasks.reporting import report_status
from tasks.workspace import cleanup_workspace


@flow(name="mlops-merge", flow_run_name="mlops-merge-{app}-{sha:.7}", log_prints=True)
def mlops_merge(app: Name, sha: Sha, forge_block: str | None = None, mlflow_block: str = "local-mlflow",
                branch: str | None = None, version: str | None = None, pr: int | None = None) -> dict:
    """Find the PR's MLflow run for the merged tree, register it (once), move ``staging`` and, when it
    beats the current champion by the configured thresholds, the champion alias."""
    application = Application.load(app)
    server = MlflowServer.load(mlflow_block)
    forge = GitForge.load(forge_block) if forge_block else None
    repo = application.forge_repo
    checkout = None
    try:
        checkout = clone_repo(application.repository, sha)
        cfg = load_ml_config(checkout.path)
        tags = run_tags(checkout, branch or application.default_branch, pr, repo, dvc_hashes(checkout.path))
        found = find_run_by_tree(server, cfg.model_name, tags["opsflow.tree"])
        champion = find_champion(server, cfg.model_name, cfg.champion_alias)
        if champion is not None and champion.run_id == found.run_id:
            promote = True
        else:
            promote = compare_to_champion(Candidate(found.metrics, found.params), champion, cfg.metrics).passed
        registered = register_model(server, cfg.model_name, found.run_id, tags, promote,
                                    gate_alias=cfg.champion_alias)
        if forge is not None:
            report_status(forge, repo, sha, "success", CONTEXT,
                          f"{cfg.model_name} v{registered} registered" + (", champion" if promote else ""))
    except Exception as exc:
        report_failure(forge, repo, sha, None, report_key("mlops-merge", application.name), exc)
        raise
    finally:
        if checkout is not None:
            cleanup_workspace([checkout.path])
    return {"version": registered, "run_id": found.run_id, "champion": promote}
