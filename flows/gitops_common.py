"""What the GitOps flows share: loading their configuration and reporting to the forge and the run."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.blocks.system import Secret
from prefect.runtime import flow_run

from blocks import Application, GitForge, ObjectStore
from opsflow.core.errors import PipelineFailed
from tasks.reporting import report_status, upsert_pr_comment
from tasks.summaries import ComponentOutcome, pipeline_report

TOKEN_USERS = {"github": "x-access-token", "gitlab": "oauth2", "gitea": "oauth2"}


@dataclass
class PipelineConfig:
    """The blocks a GitOps run works with, loaded once at its start."""

    application: Application
    store: ObjectStore
    forge: GitForge | None
    secrets: dict[str, Secret]

    @property
    def reports_to_forge(self) -> bool:
        return self.forge is not None and bool(self.application.forge_repo)

    @property
    def clone_auth(self) -> dict:
        """``token``/``token_user`` for clone_repo: the forge token when there is a forge."""
        if self.forge is None:
            return {"token": None}
        return {"token": self.forge.token, "token_user": TOKEN_USERS[self.forge.kind.value]}


def load_config(app: str, store_block: str, forge_block: str | None) -> PipelineConfig:
    """Load the application, object store, forge and the application's env file secrets."""
    application = Application.load(app)
    return PipelineConfig(
        application=application,
        store=ObjectStore.load(store_block),
        forge=GitForge.load(forge_block) if forge_block else None,
        secrets={e.secret_block: Secret.load(e.secret_block) for e in application.env_files},
    )


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
    if cfg.reports_to_forge:
        report_status(cfg.forge, cfg.application.forge_repo, sha, "pending", context, description, run_url())


def report_outcome(cfg: PipelineConfig, sha: str, context: str, pr: int | None, title: str,
                   outcomes: list[ComponentOutcome], started: float, key: str) -> str:
    """The run's markdown summary artifact, the commit status and (for a PR) the one PR comment."""
    body = pipeline_report(title, sha, outcomes, run_url(), time.monotonic() - started)
    create_markdown_artifact(markdown=body, key=key, description=title)
    create_table_artifact(key=f"{key}-components", table=[outcome_row(o) for o in outcomes],
                          description=f"{title}: one row per component")
    if cfg.reports_to_forge:
        ok = bool(outcomes) and all(o.ok for o in outcomes)
        failed = ", ".join(o.component for o in outcomes if not o.ok)
        report_status(cfg.forge, cfg.application.forge_repo, sha, "success" if ok else "failure", context,
                      "all components passed" if ok else f"failed: {failed}", run_url())
        if pr:
            upsert_pr_comment(cfg.forge, cfg.application.forge_repo, pr, key, body)
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
            "image_ref": outcome.image_ref, "image_tags": " ".join(outcome.image_tags), "error": outcome.error or "",
            "seconds": round(outcome.seconds, 1)}


def outcome_error(state) -> str:
    """The error message of a failed task state."""
    exc = state.result(raise_on_failure=False)
    return str(exc) if isinstance(exc, BaseException) else f"{state.name}: {state.message or ''}"


def raise_if_failed(outcomes: list[ComponentOutcome]) -> None:
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise PipelineFailed("; ".join(f"{o.component}: {o.error or _tests_failure(o.tests or {})}" for o in failed))


def _tests_failure(tests: dict) -> str:
    return "tests failed: " + (", ".join(tests.get("failed_names", [])) or tests.get("detail") or "see the report")
