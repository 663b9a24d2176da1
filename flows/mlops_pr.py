"""MLOps, pull request side: clone, pull DVC data (while the repository's environment is made ready), run the
experiment in that environment, read what DVC declares, log to MLflow, compare with the champion."""

from __future__ import annotations

from blocks import names
from blocks.fields import BlockName, Branch, Name, PrNumber, Sha
from flows.common import (
    config_read_first,
    load_config,
    load_secrets,
    publish_report,
    pull_request_trust,
    report_held,
    report_key,
    report_pending,
    reported_failure,
    run_url,
    workspace,
)
from flows.options import flow
from tasks.git import clone_repo
from tasks.mlops.champion import compare_to_champion
from tasks.mlops.config import load_ml_config, run_tags
from tasks.mlops.data import dvc_pull
from tasks.mlops.environment import prepare_environment
from tasks.mlops.experiment import run_experiment
from tasks.mlops.model import package_model
from tasks.mlops.report import render_report
from tasks.mlops.results import read_results
from tasks.mlops.tracking import check_mlflow, find_champion, log_to_mlflow, mlflow_run_url

CONTEXT = "mlops/eval"
TITLE = "MLOps"


@flow(name="mlops-pr", flow_run_name="mlops-pr-{app}-#{pr}-{sha:.7}", log_prints=True)
@config_read_first(mlflow="mlflow_block")
def mlops_pr(app: Name, pr: PrNumber, sha: Sha, forge_block: BlockName | None = None,
             store_block: BlockName = names.DATA_STORE, mlflow_block: BlockName = names.MLFLOW,
             branch: Branch | None = None) -> dict:
    """Evaluate a PR's model: DVC data and the repository's own environment → experiment → metrics, params and
    plots as DVC declares them, the model as an MLflow model → MLflow run → verdict against the champion → PR comment.

    Args:
        app: name of the Application block (``ml_project`` on).
        pr: pull request number (for the comment).
        sha: the PR head commit to evaluate (full SHA).
        forge_block: GitForge block to report to (the ``mlops/eval`` status and one PR comment).
        store_block: ObjectStore block of the DVC remote.
        mlflow_block: MlflowServer block the run is logged to.
        branch: the PR's head branch, tagged on the MLflow run (``opsflow.branch``; the webhook passes it).
    Returns:
        The verdict, the MLflow run id and URL, and the metric rows.
        A pull request from a fork or by an author without write access is held (verdict ``held``) until a
        maintainer adds the application's ``trusted_label``.
    Raises:
        MlopsError: a step failed (data, experiment, MLflow); the status and the comment say what to do.
    """
    cfg = load_config(app, store_block, forge_block, mlflow_block, with_secrets=False)
    server, key = cfg.mlflow, report_key("mlops-pr", cfg.application.name)
    trust = pull_request_trust(cfg, pr, can_run_untrusted=False)  # an experiment needs the data store's keys
    if trust.held:
        report_held(cfg, sha, CONTEXT, pr, key, TITLE, trust)
        return {"verdict": "held", "reason": trust.reason, "run_id": None, "url": None, "rows": []}
    cfg.secrets = load_secrets(cfg.application)
    report_pending(cfg, sha, CONTEXT, "evaluating the model")
    with reported_failure(cfg, sha, CONTEXT, pr, key, TITLE, "evaluation failed"), workspace() as paths:
        # a tracking server that does not answer fails the run before the data and the experiment (asked while
        # the clone runs)
        mlflow_up = check_mlflow.submit(server)
        try:
            checkout = clone_repo(cfg.application.repository, sha, **cfg.clone_auth)
            paths.append(checkout.path)
        finally:
            mlflow_up.wait()
        mlflow_up.result()
        ml = load_ml_config(checkout.path)
        environment = prepare_environment.submit(checkout.path, ml.environment)  # while the data is pulled
        try:
            pulled = dvc_pull(checkout.path, cfg.store)
        finally:
            environment.wait()  # never leave it reading a checkout that is being removed
        run_experiment(checkout.path, environment.result(), ml, cfg.store)
        # the champion and the MLflow model while the results are read (each waited for before the checkout goes)
        champion = find_champion.submit(server, ml.model_name, ml.champion_alias)
        model = package_model.submit(checkout.path, ml.model, environment.result())
        try:
            candidate = read_results(checkout.path)
        finally:
            model.wait()
            champion.wait()
        tags = run_tags(checkout, branch, pr, cfg.repo, pulled.data_hashes)
        logged = log_to_mlflow(server, ml.model_name, checkout.path, candidate, tags, model.result())
        comparison = compare_to_champion(candidate, champion.result(), ml.metrics)
        link = mlflow_run_url(server, logged.experiment_id, logged.run_id)
        body = render_report(comparison, ml.model_name, pulled.data_hashes, link, run_url(), champion.result(),
                             candidate.plots)
        publish_report(cfg, sha, CONTEXT, pr, key, TITLE, body, comparison.passed, comparison.verdict, link)
    return {"verdict": comparison.verdict, "run_id": logged.run_id, "url": link,
            "rows": [r.__dict__ for r in comparison.rows]}
