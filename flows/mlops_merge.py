"""MLOps, merge side: register the run the PR produced for the merged tree; move the aliases.

With ``approve_champion`` the run pauses when the gate passes, showing the comparison, and moves
the champion alias only once a person resumes it with ``approve: true``.
"""

from __future__ import annotations

from typing import Annotated

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from blocks import names
from blocks.fields import BlockName, Branch, ImageTag, Name, PrNumber, Sha
from flows.common import (
    config_read_first,
    load_config,
    publish_report,
    report_key,
    reported_failure,
    run_url,
    workspace,
)
from flows.mlops_pr import CONTEXT, TITLE
from flows.options import flow
from opsflow.core.errors import ApprovalNotGiven
from tasks.git import clone_repo
from tasks.mlops.champion import Candidate, compare_to_champion
from tasks.mlops.config import load_ml_config, run_tags
from tasks.mlops.data import dvc_hashes
from tasks.mlops.report import render_report
from tasks.mlops.tracking import (
    experiment_id,
    find_champion,
    find_run_by_tree,
    mlflow_run_url,
    register_model,
    set_model_alias,
)
from tasks.workspace import cleanup_workspace

APPROVAL_POLL_SECONDS = 2
ApprovalTimeout = Annotated[int, Field(ge=5, le=7 * 24 * 3600,
                                       description="Seconds to wait for the approval before the run fails.")]


class ChampionApproval(RunInput):
    """The answer given when resuming a merge run paused before the champion promotion."""

    approve: bool = Field(default=False, description="Move the champion alias to the new version.")


def wait_for_approval(comparison_md: str, timeout: int) -> bool:
    """Pause this run, showing ``comparison_md`` in the resume form; ``True`` when resumed with approve.

    Raises ``ApprovalNotGiven`` when the pause times out. A paused run cannot start tasks, so
    everything that needs one is done before the pause.
    """
    form = ChampionApproval.with_initial_data(description=comparison_md, approve=False)
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=APPROVAL_POLL_SECONDS,
                                key="approve-champion")
    except FlowPauseTimeout:
        raise ApprovalNotGiven(f"no approval within {timeout}s: the champion alias did not move; re-run the "
                               f"merge flow and resume it with approve: true to promote") from None
    return bool(answer.approve)


@flow(name="mlops-merge", flow_run_name="mlops-merge-{app}-{sha:.7}", log_prints=True)
@config_read_first(store=None, mlflow="mlflow_block")
def mlops_merge(app: Name, sha: Sha, forge_block: BlockName | None = None, mlflow_block: BlockName = names.MLFLOW,
                branch: Branch | None = None, version: ImageTag | None = None, pr: PrNumber | None = None,
                approve_champion: bool = False, approval_timeout: ApprovalTimeout = 3600) -> dict:
    """Find the PR's MLflow run for the merged tree, register it (once), move ``staging`` and, when it
    beats the current champion by the configured thresholds, the champion alias.

    With ``approve_champion``, a passing gate pauses the run (the comparison is its artifact and the
    resume form's text); resuming with ``approve: true`` moves the champion alias, ``false`` leaves
    it, and no answer within ``approval_timeout`` seconds fails the run with the champion unchanged.

    Args:
        app: name of the Application block (``ml_project`` on).
        sha: the merge commit (full SHA).
        forge_block: GitForge block to report the ``mlops/eval`` status to.
        mlflow_block: MlflowServer block with the PR's runs and the model registry.
        branch: the branch the merge landed on (default: the application's default branch).
        version: a release tag (a git tag push); recorded by the webhook, not used by the registry.
        pr: the merged pull request, tagged on the model version.
        approve_champion: pause for a person's approval before moving the champion alias.
        approval_timeout: seconds to wait for that approval.
    Returns:
        The version, the run id, whether the champion moved and, with approval, the answer.
    Raises:
        MlopsError: no PR run for the merged tree, MLflow unreachable; ApprovalNotGiven: no answer in time.
    """
    cfg = load_config(app, None, forge_block, mlflow_block)
    server, key = cfg.mlflow, report_key("mlops-merge", cfg.application.name)
    approval = None
    with reported_failure(cfg, sha, CONTEXT, None, key, TITLE, "evaluation failed", passthrough=(ApprovalNotGiven,)), \
            workspace() as paths:
        checkout = clone_repo(cfg.application.repository, sha, **cfg.clone_auth)
        paths.append(checkout.path)
        ml = load_ml_config(checkout.path)
        data = dvc_hashes(checkout.path)
        tags = run_tags(checkout, branch or cfg.application.default_branch, pr, cfg.repo, data)
        found = find_run_by_tree(server, ml.model_name, tags["opsflow.tree"])
        champion = find_champion(server, ml.model_name, ml.champion_alias)
        comparison = None
        if champion is not None and champion.run_id == found.run_id:
            gate = True  # already the champion: nothing to approve
        else:
            comparison = compare_to_champion(Candidate(found.metrics, found.params), champion, ml.metrics)
            gate = comparison.passed
        ask = approve_champion and gate and comparison is not None
        registered = register_model(server, ml.model_name, found.run_id, tags, gate and not ask,
                                    gate_alias=ml.champion_alias)
        promote = gate and not ask
        link = mlflow_run_url(server, experiment_id(server, ml.model_name), found.run_id)
        if ask:
            body = render_report(comparison, ml.model_name, data, link, run_url(), champion)
            body += f"\n\n**Approval:** move `{ml.champion_alias}` to {ml.model_name} v{registered}?"
            publish_report(cfg, sha, CONTEXT, None, key, TITLE, body, True,
                           f"{ml.model_name} v{registered} registered; {ml.champion_alias} awaits approval")
            cleanup_workspace(paths)  # a paused run cannot start tasks: clean up before the pause
            paths.clear()
            approval = wait_for_approval(body, approval_timeout)
            if approval:
                set_model_alias(server, ml.model_name, ml.champion_alias, registered)
            promote = approval
        kept = f", {ml.champion_alias} not approved" + (f" (stays v{champion.version})" if champion else "")
        outcome = (f"{ml.model_name} v{registered} registered"
                   + (f", {ml.champion_alias}" if promote else (kept if ask else "")))
        publish_report(cfg, sha, CONTEXT, None, key, TITLE, f"### {TITLE}: {ml.model_name}\n\n{outcome}\n\n"
                       f"[MLflow run]({link})", True, outcome)
    result = {"version": registered, "run_id": found.run_id, "champion": promote}
    if ask:
        result["approved"] = approval
    return result
