"""GitOps, pull request side: build every component once, store the artifact, run the tests, report."""

from __future__ import annotations

import tempfile
from pathlib import Path

from blocks import names
from blocks.fields import BlockName, Name, PrNumber, Sha
from flows import common
from flows.options import UNPERSISTED_RESULT, flow
from opsflow.core.threads import ContextThreadPool
from tasks.app_tests import run_tests
from tasks.artifacts.store import read_plan, record_test_results, save_artifact
from tasks.build import build_app
from tasks.build.caches import DEFAULT_MAX_BYTES, TreeCache
from tasks.build.deps import install_deps
from tasks.env_files import fetch_env_files, redaction_list
from tasks.git import Checkout, clone_repo
from tasks.summaries import ComponentOutcome, tests_passed

CONTEXT = "opsflow/gitops-pr"


def _tests_report(tested):
    """The test report of a finished ``run_tests`` future (a failing run's ``TestsFailed`` carries it), or None
    when the tests could not run."""
    result = tested.result(raise_on_failure=False)
    report = getattr(result, "report", result)
    return report if hasattr(report, "summary") else None


def _collect(comp, plan, build, saved, tested, store) -> ComponentOutcome:
    """One component's outcome from its build → save → test futures (waited for; the tests may run beside)."""
    saved.wait()
    tested.wait()
    outcome = ComponentOutcome(comp.name)
    if not build.state.is_completed():
        outcome.error = common.outcome_error(build.state)
        return outcome
    outcome.seconds = build.result().duration_s
    if not saved.state.is_completed():
        outcome.error = common.outcome_error(saved.state)
        return outcome
    ref = saved.result()
    outcome.artifact_key, outcome.artifact_digest, outcome.artifact_size = ref.key, ref.digest, ref.size
    outcome.artifact_reused = not ref.uploaded
    report = _tests_report(tested)
    if report is None:
        outcome.error = common.outcome_error(tested.state)
        return outcome
    outcome.tests = report.summary()
    outcome.seconds += report.seconds
    record_test_results(store, ref.key, outcome.tests)
    return outcome


def build_and_test(cfg: common.PipelineConfig, checkout: Checkout, extra_secrets: list[str]) -> list[ComponentOutcome]:
    """Build, store and test every component in parallel; a stored artifact that passed is reused.

    The dependencies are installed (or restored from the build server's cache) before the env files are
    written, so no secret can reach a cache; then each component builds, is stored and tested (its tests beside
    the build when its ``test_after_build`` is off).
    """
    application, store = cfg.application, cfg.store
    cache = TreeCache.from_env()
    with ContextThreadPool(len(application.components), thread_name_prefix="read-plan") as pool:  # side by side
        plans = [(c, pool.submit(read_plan, store, checkout, application.name, c)) for c in application.components]
    reused, todo = [], []
    for comp, plan_future in plans:
        plan = plan_future.result()
        if plan.exists and tests_passed(plan.metadata.get("tests")):
            reused.append(ComponentOutcome(comp.name, plan.key, plan.metadata["digest"], plan.metadata["size"],
                                           artifact_reused=True, tests=plan.metadata["tests"]))
        else:
            todo.append((comp, plan, install_deps.submit(checkout, comp, cache)))
    for _comp, _plan, installed in todo:
        installed.wait()
    redact: list[str] = []
    if todo:
        written = fetch_env_files(checkout, application.env_files, cfg.secrets)
        redact = redaction_list(checkout, written, application.env_files, common.public_names(application))
        redact += extra_secrets
    chains, failed = [], []
    for comp, plan, installed in todo:
        if not installed.state.is_completed():
            failed.append(ComponentOutcome(comp.name, error=common.outcome_error(installed.state)))
            continue
        build = build_app.submit(checkout, comp, redact, cache=cache)
        saved = save_artifact.submit(store, plan, build, comp, checkout)
        # After the stored artifact by default; beside the build when the tests do not use its output.
        tested = run_tests.submit(checkout, comp, redact, cache=cache,
                                  wait_for=[saved] if comp.test_after_build else [])
        chains.append((comp, plan, build, saved, tested))
    outcomes = reused + failed + [_collect(*chain, store) for chain in chains]
    return common.in_component_order(application, outcomes)


def build_and_test_untrusted(cfg: common.PipelineConfig, checkout: Checkout, scratch: Path) -> list[ComponentOutcome]:
    """An untrusted pull request: build and test every component without env files and store nothing (an
    artifact a merge could pick up must never come from code nobody vetted). Its dependencies install into
    a cache of its own under ``scratch`` (deleted with the workspace): the build server's shared cache is
    never written by code nobody vetted."""
    cache = TreeCache(scratch / "dependency-cache", DEFAULT_MAX_BYTES)
    chains = []
    for comp in cfg.application.components:
        installed = install_deps.submit(checkout, comp, cache)
        build = build_app.submit(checkout, comp, [], cache=cache, wait_for=[installed])
        tested = run_tests.submit(checkout, comp, [], cache=cache,
                                  wait_for=[build] if comp.test_after_build else [installed])
        chains.append((comp, installed, build, tested))
    outcomes = []
    for comp, installed, build, tested in chains:
        tested.wait()
        outcome = ComponentOutcome(comp.name)
        if not installed.state.is_completed():
            outcome.error = common.outcome_error(installed.state)
        elif not build.state.is_completed():
            outcome.error = common.outcome_error(build.state)
        elif (report := _tests_report(tested)) is not None:
            outcome.tests, outcome.seconds = report.summary(), build.result().duration_s + report.seconds
        else:
            outcome.error = common.outcome_error(tested.state)
        outcomes.append(outcome)
    return outcomes


@flow(name="gitops-pr", flow_run_name="gitops-pr-{app}-#{pr}-{sha:.7}", log_prints=True,
      **UNPERSISTED_RESULT)
@common.config_read_first()
def gitops_pr(
    app: Name,
    pr: PrNumber,
    sha: Sha,
    forge_block: BlockName | None = None,
    store_block: BlockName = names.ARTIFACT_STORE,
) -> list[dict]:
    """Pull request pipeline: clone the head SHA, install dependencies (cached by lockfile), write env files,
    build, store the artifact, test, report.

    Components run in parallel. Re-running for a SHA whose artifacts are stored and tested
    builds nothing. Builds and tests run with a scrubbed environment (nothing of the worker's).
    The commit status goes pending → success/failure and one PR comment is kept up to date; a run
    for an older head never overwrites the comment of a newer one. A pull request from a fork or by
    an author without write access is held (nothing runs; the status and comment say why) or run
    without secrets, storing nothing, as the application's ``untrusted_prs`` says, until a
    maintainer adds its ``trusted_label``.

    Args:
        app: name of the Application block.
        pr: pull request number (for the comment).
        sha: the PR head commit to build (full SHA).
        forge_block: GitForge block to report to (statuses and one PR comment); none = no forge reports.
        store_block: ObjectStore block where artifacts are kept.
    Returns:
        One row per component: artifact key, digest, size and test summary.
    Raises:
        PipelineFailed: a component failed to build, store or pass its tests (all are named).
    """
    cfg = common.load_config(app, store_block, forge_block, with_secrets=False)
    title = f"opsflow GitOps · {cfg.application.name} · PR #{pr}"
    key = common.report_key("gitops-pr", cfg.application.name)
    trust = common.pull_request_trust(cfg, pr)
    if trust.held:
        common.report_held(cfg, sha, CONTEXT, pr, key, title, trust)
        return []
    with common.reported_components(cfg, sha, CONTEXT, pr, title, key, "building and testing") as result, \
            common.workspace() as paths, ContextThreadPool(1, thread_name_prefix="load-secrets") as pool:
        # A trusted run's env file secrets load while the commit is checked out (an untrusted one never loads them).
        secrets = pool.submit(common.load_secrets, cfg.application) if trust.trusted else None
        checkout = clone_repo(cfg.application.repository, sha, **cfg.clone_auth)
        paths.append(checkout.root)
        if secrets is None:  # run without secrets: no env files, nothing stored, a cache of its own
            scratch = Path(tempfile.mkdtemp(prefix="opsflow-run-untrusted-"))
            paths.append(scratch)
            result.components = build_and_test_untrusted(cfg, checkout, scratch)
        else:
            cfg.secrets = secrets.result()
            result.components = build_and_test(cfg, checkout, common.block_secrets(cfg.forge))
    common.raise_if_failed(result.components)
    return [o.__dict__ for o in result.components]
