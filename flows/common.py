"""What every pipeline shares: its blocks loaded once, and its report to the forge and the run.

GitOps and MLOps runs have one shape: ``cfg = load_config(...)`` → ``report_pending`` → the steps →
``publish_report`` with the rendered report (GitOps: ``report_outcome`` renders the components),
or, when a step fails before there is a report, ``report_failure`` with what failed and what to do.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.blocks.core import Block
from prefect.blocks.system import Secret
from prefect.runtime import flow_run

from blocks import Application, GitForge, MlflowServer, ObjectStore
from blocks.loading import load_blocks, reads_blocks_first
from opsflow.core.errors import PipelineFailed
from opsflow.core.redact import install_log_redaction, register
from opsflow.core.threads import ContextThreadPool
from tasks.pr_trust import RUN, TrustDecision, check_pull_request_trust
from tasks.reporting import report_status, upsert_pr_comment
from tasks.summaries import ComponentOutcome, failure_report, pipeline_report
from tasks.workspace import cleanup_workspace


@dataclass
class PipelineConfig:
    """The blocks a pipeline run works with, loaded once at its start."""

    application: Application
    store: ObjectStore | None
    forge: GitForge | None
    secrets: dict[str, Secret]
    mlflow: MlflowServer | None = None
    extra: list = field(default_factory=list)  # the ``extra`` blocks load_config was asked for, in order

    @property
    def repo(self) -> str:
        """The application's repository on the forge (``owner/name``), or ``""``."""
        return self.application.forge_repo

    @property
    def reports_to_forge(self) -> bool:
        return self.forge is not None and bool(self.application.forge_repo)

    @property
    def clone_auth(self) -> dict:
        """``token``/``token_user`` for clone_repo: the forge token when there is a forge."""
        if self.forge is None:
            return {"token": None}
        return {"token": self.forge.token, "token_user": self.forge.clone_user}


def block_secrets(*blocks) -> list[str]:
    """The values of every ``SecretStr`` field of these blocks (None skipped)."""
    from pydantic import SecretStr

    values = []
    for block in blocks:
        for name in type(block).model_fields if block is not None else ():
            value = getattr(block, name, None)
            if isinstance(value, SecretStr):
                values.append(value.get_secret_value())
    return values


def load_config(app: str, store_block: str | None, forge_block: str | None,
                mlflow_block: str | None = None, with_secrets: bool = True,
                extra: tuple[tuple[type[Block], str | None], ...] = ()) -> PipelineConfig:
    """Load the application, its object store, forge, MLflow server and (``with_secrets``) env file secrets;
    ``extra`` blocks (``(class, name)`` pairs, e.g. the registry) are loaded with them into ``cfg.extra``.

    Every secret value loaded is registered for redaction (``opsflow.core.redact``) and the run's log
    handlers mask them from here on.
    """
    install_log_redaction()
    application, store, forge, mlflow, *others = load_blocks(
        (Application, app), (ObjectStore, store_block), (GitForge, forge_block), (MlflowServer, mlflow_block), *extra)
    cfg = PipelineConfig(application=application, store=store, forge=forge,
                         secrets=load_secrets(application) if with_secrets else {}, mlflow=mlflow, extra=others)
    register(block_secrets(cfg.store, cfg.forge, cfg.mlflow, *others))
    return cfg


def config_read_first(store: str | None = "store_block", mlflow: str | None = None,
                      extra: tuple[tuple[type[Block], str], ...] = ()):
    """Mark a flow whose first step is ``load_config(app, <store>, forge_block, <mlflow>, extra=...)``, each given
    as the name of the flow's parameter that holds it (``extra``: ``(class, parameter)`` pairs), so a worker's run
    process reads those blocks while Prefect's engine starts the run (``blocks.loading.reads_blocks_first``)."""
    def wanted(arguments):
        return [(Application, arguments.get("app")), (ObjectStore, arguments.get(store) if store else None),
                (GitForge, arguments.get("forge_block")), (MlflowServer, arguments.get(mlflow) if mlflow else None),
                *((cls, arguments.get(parameter)) for cls, parameter in extra)]
    return reads_blocks_first(wanted)


def public_names(application: Application) -> list[str]:
    """Names that are never masked even when an env file value equals one: the app's and its components'."""
    return [application.name, *(c.name for c in application.components), application.forge_repo]


def load_secrets(application: Application) -> dict[str, Secret]:
    """The Secret blocks of the application's env files (loaded at once)."""
    names = list(dict.fromkeys(e.secret_block for e in application.env_files))
    return dict(zip(names, load_blocks(*((Secret, name) for name in names)), strict=True))


def pull_request_trust(cfg: PipelineConfig, pr: int, can_run_untrusted: bool = True) -> TrustDecision:
    """Whether this pull request's code may run with secrets (``tasks/pr_trust.py``). A run that reports to no
    forge was started by a Prefect user, not by a forge delivery: trusted."""
    if not cfg.reports_to_forge:
        return TrustDecision(RUN, "no forge to ask: started by hand")
    return check_pull_request_trust(cfg.forge, cfg.application, pr, can_run_untrusted)


def report_held(cfg: PipelineConfig, sha: str, context: str, pr: int, key: str, title: str,
                decision: TrustDecision) -> None:
    """A held pull request: why, as the run's report, a pending status and the PR comment."""
    body = (f"### ⏸ {title} · `{sha[:7]}`\n**held:** {decision.reason}. Nothing of this pull request ran: no "
            f"checkout, no env files, no build.\n\nA maintainer who has read the change adds the label "
            f"`{decision.label}` to run it (its later pushes run too while the label stays).\n")
    if run_url():
        body += f"\n[Prefect run]({run_url()})\n"
    create_markdown_artifact(markdown=body, key=key, description=f"{title} (held)")
    if cfg.reports_to_forge:
        status = f"held until a maintainer adds the label {decision.label!r}"
        report_status(cfg.forge, cfg.repo, sha, "pending", context, status[:140], run_url())
        upsert_pr_comment(cfg.forge, cfg.repo, pr, key, body)


def run_url() -> str | None:
    """This flow run's page in the Prefect UI (the canonical ``/runs/flow-run/<id>`` route)."""
    from prefect.settings import PREFECT_UI_URL

    run_id = flow_run.get_id()
    base = PREFECT_UI_URL.value()
    return f"{base.rstrip('/')}/runs/flow-run/{run_id}" if run_id and base else None


def report_key(kind: str, app: str) -> str:
    """A Prefect artifact / PR comment key: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{kind}-{app}".lower())


def report_pending(cfg: PipelineConfig, sha: str, context: str, description: str) -> None:
    """The commit status ``context`` set to pending (when the run reports to a forge).

    Best effort: a forge that does not answer does not hold the build up (the final status is retried
    within its deadline and replaces this one).
    """
    if cfg.reports_to_forge:
        state = report_status.with_options(retries=0)(cfg.forge, cfg.repo, sha, "pending", context, description,
                                                      run_url(), return_state=True)
        if not state.is_completed():
            from prefect import get_run_logger

            get_run_logger().warning("the pending status could not be set (the build goes on): %s",
                                     outcome_error(state))


def run_created() -> str:
    """When this flow run was scheduled to start (ISO 8601 UTC): orders the runs of one pull request."""
    started = flow_run.get_scheduled_start_time()
    return started.isoformat() if started else ""


def publish_report(cfg: PipelineConfig, sha: str, context: str, pr: int | None, key: str, title: str, body: str,
                   ok: bool, description: str, target_url: str | None = None, comment: bool = True) -> None:
    """The report as the run's markdown artifact, the final commit status and (for a PR) the one PR comment.

    The forge calls are retried within their deadline (``tasks.reporting``); when the forge stays
    unreachable the run keeps its own result (the build's) and says, in its log and artifact, that the
    report was not delivered, as a CI service keeps a build whose status could not be posted.
    """
    undelivered = []
    if cfg.reports_to_forge:
        status = report_status(cfg.forge, cfg.repo, sha, "success" if ok else "failure", context, description,
                               target_url or run_url(), return_state=True)
        if not status.is_completed():
            undelivered.append(f"commit status: {outcome_error(status)}")
        if pr and comment:
            posted = upsert_pr_comment(cfg.forge, cfg.repo, pr, key, body, head=sha, created=run_created(),
                                       return_state=True)
            if not posted.is_completed():
                undelivered.append(f"PR comment: {outcome_error(posted)}")
    if undelivered:
        from prefect import get_run_logger

        get_run_logger().error("the report could not be delivered to the forge (the run's result stands): %s",
                               "; ".join(undelivered))
        body += "\n**Not delivered to the forge:** " + "; ".join(u.splitlines()[0][:300] for u in undelivered) + "\n"
    create_markdown_artifact(markdown=body, key=key, description=title)


def report_failure(cfg: PipelineConfig, sha: str, context: str, pr: int | None, key: str, title: str,
                   exc: Exception, verdict: str = "failed") -> None:
    """What failed and what to do, as the run's report, a failed status and (for a PR) the PR comment."""
    text = str(exc).split("\n--- last output ---")[0]
    body = failure_report(title, text, run_url(), verdict) + output_block(getattr(exc, "last_lines", None) or [])
    publish_report(cfg, sha, context, pr, key, title, body, ok=False, description=text)


def output_block(lines: list[str]) -> str:
    """The last lines of a failed command's output (already redacted) as a fenced markdown block, or ``""``."""
    if not lines:
        return ""
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)  # longer than any backtick run in the output, so nothing breaks out
    return "\n\n**Last lines of the output:**\n\n" + "\n".join([f"{fence}text", *lines, fence]) + "\n"


def report_outcome(cfg: PipelineConfig, sha: str, context: str, pr: int | None, title: str,
                   outcomes: list[ComponentOutcome], started: float, key: str) -> str:
    """The components' outcomes as the run's summary and table artifacts, the commit status and the PR comment."""
    body = pipeline_report(title, sha, outcomes, run_url(), time.monotonic() - started)
    ok = bool(outcomes) and all(o.ok for o in outcomes)
    failed = ", ".join(o.component for o in outcomes if not o.ok)
    with ContextThreadPool(1, thread_name_prefix="report-table") as pool:  # beside the report's own calls
        table = pool.submit(create_table_artifact, key=f"{key}-components", table=[outcome_row(o) for o in outcomes],
                            description=f"{title}: one row per component")
        publish_report(cfg, sha, context, pr, key, title, body, ok,
                       "all components passed" if ok else f"failed: {failed}")
        table.result()
    return body


def in_component_order(application: Application, outcomes: list[ComponentOutcome]) -> list[ComponentOutcome]:
    """Outcomes sorted as the application lists its components."""
    order = [comp.name for comp in application.components]
    return sorted(outcomes, key=lambda o: order.index(o.component))


def outcomes_on_error(application: Application, outcomes: list[ComponentOutcome],
                      exc: Exception) -> list[ComponentOutcome]:
    """What to report when the run failed before every component had an outcome."""
    return outcomes or [ComponentOutcome(comp.name, error=str(exc)) for comp in application.components]


def outcome_row(outcome: ComponentOutcome) -> dict:
    """A component's outcome as a flat table row (the run's ``*-components`` artifact)."""
    tests = outcome.tests or {}
    return {"component": outcome.component, "ok": outcome.ok, "artifact_key": outcome.artifact_key,
            "artifact_digest": outcome.artifact_digest, "artifact_size": outcome.artifact_size,
            "artifact_reused": outcome.artifact_reused, "tests_passed": tests.get("passed"),
            "tests_failed": (tests.get("failed") or 0) + (tests.get("errors") or 0) if tests else None,
            "image_ref": outcome.image_ref, "image_tags": " ".join(outcome.image_tags),
            "tags_added": " ".join(outcome.tags_added), "error": outcome.error or "",
            "seconds": round(outcome.seconds, 1)}


def outcome_error(state) -> str:
    """The error message of a failed task state (or why a task never ran)."""
    if not state.is_final():
        return f"{state.name}: it did not run because a step before it failed"
    exc = state.result(raise_on_failure=False)
    return str(exc) if isinstance(exc, BaseException) else f"{state.name}: {state.message or ''}"


def raise_if_failed(outcomes: list[ComponentOutcome]) -> None:
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise PipelineFailed("; ".join(f"{o.component}: {o.error or _tests_failure(o.tests or {})}" for o in failed))


def _tests_failure(tests: dict) -> str:
    return "tests failed: " + (", ".join(tests.get("failed_names", [])) or tests.get("detail") or "see the report")


@dataclass
class Outcomes:
    """The components' outcomes a GitOps run reports when it ends."""

    components: list[ComponentOutcome] = field(default_factory=list)


@contextmanager
def reported_components(cfg: PipelineConfig, sha: str, context: str, pr: int | None, title: str, key: str,
                        pending: str) -> Iterator[Outcomes]:
    """A pending status now; on the way out the outcomes as the run's report, status and PR comment (when a
    step raised before every component had one, each component with the error)."""
    started = time.monotonic()
    report_pending(cfg, sha, context, pending)
    result = Outcomes()
    try:
        yield result
    except Exception as exc:
        result.components = outcomes_on_error(cfg.application, result.components, exc)
        raise
    finally:
        report_outcome(cfg, sha, context, pr, title, result.components, started, key)


@contextmanager
def reported_failure(cfg: PipelineConfig, sha: str, context: str, pr: int | None, key: str, title: str,
                     verdict: str = "failed", passthrough: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """On the way out of a failed step, what failed as the run's report, a failed status and the PR comment
    (``passthrough`` errors are raised without one)."""
    try:
        yield
    except passthrough:
        raise
    except Exception as exc:
        report_failure(cfg, sha, context, pr, key, title, exc, verdict)
        raise


@contextmanager
def workspace() -> Iterator[list[Path]]:
    """Directories the run fills (its checkout, loaded artifacts), removed on the way out, whatever happened."""
    paths: list[Path] = []
    try:
        yield paths
    finally:
        if paths:
            cleanup_workspace(paths)
