"""MLOps, pull request side: clone, pull DVC data, run the experiment, log to MLflow, compare with the champion."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import Field

from blocks import Application, GitForge, MlflowServer, ObjectStore
from blocks.fields import Name, Sha
from flows.gitops_common import report_key, run_url
from tasks.git import clone_repo
from tasks.mlops.champion import compare_to_champion
from tasks.mlops.config import load_ml_config, run_tags
from tasks.mlops.data import dvc_pull
from tasks.mlops.experiment import run_experiment
from tasks.mlops.report import publish_report, render_report
from tasks.mlops.tracking import experiment_id, find_champion, log_to_mlflow, mlflow_run_url
from tasks.reporting import report_status, upsert_pr_comment
from tasks.workspace import cleanup_workspace

CONTEXT = "mlops/eval"
PrNumber = Annotated[int, Field(gt=0, le=10**9, description="Pull request number.")]


def report_failure(forge: GitForge | None, repo: str, sha: str, pr: int | None, key: str, exc: Exception) -> None:
    """Post the failed status and, for a PR, the comment saying what happened and what to do."""
    text = str(exc).split("\n--- last output ---")[0]
    if forge is not None:
        report_status(forge, repo, sha, "failure", CONTEXT, text, run_url())
        if pr is not None:
            upsert_pr_comment(forge, repo, pr, key, f"### MLOps\n**❌ evaluation failed:** {text}\n\n"
                              + (f"[Prefect run]({run_url()})" if run_url() else ""))
    publish_report(key, f"### MLOps\n**❌ failed:** {text}")


@flow(name="mlops-pr", flow_run_name="mlops-pr-{app}-#{pr}-{sha:.7}", log_prints=True)
def mlops_pr(app: Name, pr: PrNumber, sha: Sha, forge_block: str | None = None, store_block: str = "opsflow-data",
             mlflow_block: str = "local-mlflow", branch: str | None = None) -> dict:
    """Evaluate a PR's model: DVC data → experiment → MLflow run → verdict against the champion → PR comment.

    Returns the verdict, the MLflow run id and the metric rows. Raises the failing step's error
    after posting a failed ``mlops/eval`` status and the comment that explains it.
    """
    application = Application.load(app)
    store, server = ObjectStore.load(store_block), MlflowServer.load(mlflow_block)
    forge = GitForge.load(forge_block) if forge_block else None
    repo, key = application.forge_repo, report_key("mlops-pr", application.name)
    if forge is not None:
        report_status(forge, repo, sha, "pending", CONTEXT, "evaluating the model", run_url())
    checkout = None
    try:
        checkout = clone_repo(application.repository, sha)
        cfg = load_ml_config(checkout.path)
        pulled = dvc_pull(checkout.path, store)
        candidate = run_experiment(checkout.path, cfg.command)
        tags = run_tags(checkout, branch, pr, repo, pulled.data_hashes)
        run_id = log_to_mlflow(server, cfg.model_name, checkout.path, candidate, tags)
        champion = find_champion(server, cfg.model_name, cfg.champion_alias)
        comparison = compare_to_champion(candidate, champion, cfg.metrics)
        link = mlflow_run_url(server, experiment_id(server, cfg.model_name), run_id)
        body = render_report(comparison, cfg.model_name, pulled.data_hashes, link, run_url(), champion,
                             candidate.plots)
        publish_report(key, body)
        if forge is not None:
            upsert_pr_comment(forge, repo, pr, key, body)
            report_status(forge, repo, sha, "success" if comparison.passed else "failure", CONTEXT,
                          comparison.verdict, link)
    except Exception as exc:
        report_failure(forge, repo, sha, pr, key, exc)
        raise
    finally:
        if checkout is not None:
            cleanup_workspace([checkout.path])
    return {"verdict": comparison.verdict, "run_id": run_id, "url": link, "rows": [r.__dict__ for r in comparison.rows]}
