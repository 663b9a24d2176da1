"""GitOps, merge side: the artifact the pull request built and tested becomes the image that is pushed."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from blocks import ContainerRegistry, DockerHostTarget, names
from blocks.fields import BlockName, Branch, ImageTag, Name, PrNumber, Sha
from flows import common
from opsflow.core.errors import ArtifactNotFound
from tasks.artifacts.store import ArtifactPlan, load_artifact, plan_artifact, save_artifact
from tasks.build import build_app
from tasks.env_files import fetch_env_files, redaction_list
from tasks.git import Checkout, clone_repo
from tasks.images.base import ensure_base_image
from tasks.images.build import build_image
from tasks.images.prune import prune_build_images
from tasks.images.push import push_image
from tasks.registry.lookup import lookup_image
from tasks.summaries import ComponentOutcome, tests_passed

CONTEXT = "opsflow/gitops-merge"
Version = Annotated[ImageTag | None, Field(description="Version tag to add (for a git tag push), e.g. 1.4.2.")]


def branch_tag(branch: str) -> str:
    """An image tag for a branch name: ``feature/x`` → ``feature-x``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", branch).strip(".-")[:128] or "branch"


def find_artifacts(cfg: common.PipelineConfig, checkout: Checkout, build_if_missing: bool) -> dict[str, ArtifactPlan]:
    """The stored artifact of every component's tree; refuses untested-and-failed or missing ones.

    With ``build_if_missing``, a missing artifact is built (and stored) here instead.
    """
    logger = get_run_logger()
    application, store = cfg.application, cfg.store
    futures = {c.name: plan_artifact.submit(store, checkout, application.name, c) for c in application.components}
    plans = {name: f.result() for name, f in futures.items()}
    failed = [p for p in plans.values()
              if p.exists and p.metadata.get("tests") and not tests_passed(p.metadata["tests"])]
    if failed:
        raise ArtifactNotFound("the pull request tests failed for " + "; ".join(
            f"{p.component} (key {p.key}): "
            f"{', '.join(p.metadata['tests']['failed_names'][:5]) or p.metadata['tests'].get('detail', '')}"
            for p in failed))
    missing = [p for p in plans.values() if not p.exists]
    if missing and not build_if_missing:
        raise ArtifactNotFound("no pull request artifact for " + "; ".join(
            f"{p.component} (key {p.key}, tree {p.tree[:12]})" for p in missing)
            + "; run the pull request pipeline for this tree, or re-run with build_if_missing=true")
    if missing:
        written = fetch_env_files(checkout, application.env_files, cfg.secrets)
        redact = redaction_list(checkout, written)
        for plan in missing:
            logger.warning("no artifact for %s: building it (build_if_missing)", plan.component)
            comp = application.component(plan.component)
            saved = save_artifact(store, plan, build_app(checkout, comp, redact), comp, checkout)
            plans[plan.component] = replace(plan, exists=True, metadata=saved.metadata)
    untested = [p.component for p in plans.values() if not p.metadata.get("tests")]
    if untested:
        logger.warning("artifacts of %s were never tested", ", ".join(untested))
    return plans


def package_and_push(cfg: common.PipelineConfig, checkout: Checkout, plans: dict[str, ArtifactPlan], tags: list[str],
                     registry: ContainerRegistry, engine: DockerHostTarget, cleanup: list) -> list[ComponentOutcome]:
    """Per component in parallel: load the artifact, build the image from it, push it."""
    logger = get_run_logger()
    application = cfg.application
    kinds = sorted({c.base_image.split(":", 1)[1] for c in application.components
                    if c.base_image.startswith("opsflow:")})
    bases = {f"opsflow:{k}": ensure_base_image.submit(engine, k) for k in kinds}
    done, chains = [], []
    for comp in application.components:
        plan = plans[comp.name]
        outcome = ComponentOutcome(comp.name, plan.key, plan.metadata["digest"], plan.metadata["size"], True,
                                   tests=plan.metadata.get("tests"))
        repository = registry.repository(f"{application.name}-{comp.name}")
        existing = lookup_image(registry, repository, tags[0])
        if existing:
            logger.info("%s:%s is already in the registry (%s); not pushed again", repository, tags[0], existing)
            outcome.image_ref, outcome.image_tags = f"{repository}@{existing}", [tags[0]]
            done.append(outcome)
            continue
        loaded = load_artifact.submit(store=cfg.store, key=plan.key)
        built = build_image.submit(
            engine, loaded, repository, tags, revision=checkout.sha, source=application.repository,
            build_args={"BASE_IMAGE": bases.get(comp.base_image, comp.base_image)},
            labels={"org.opencontainers.image.created": checkout.committed_at,
                    "dev.opsflow.artifact.key": plan.key, "dev.opsflow.artifact.digest": plan.metadata["digest"]})
        chains.append((outcome, loaded, push_image.submit(engine, registry, built)))
    for outcome, loaded, pushed in chains:
        pushed.wait()
        if loaded.state.is_completed():
            cleanup.append(loaded.result().path)
        if pushed.state.is_completed():
            image = pushed.result()
            outcome.image_ref, outcome.image_tags = image.ref, image.tags
        else:
            outcome.error = common.outcome_error(pushed.state)
        done.append(outcome)
    return common.in_component_order(application, done)


@flow(name="gitops-merge", flow_run_name="gitops-merge-{app}-{sha:.7}", log_prints=True)
def gitops_merge(
    app: Name,
    sha: Sha,
    branch: Branch = "main",
    pr: PrNumber | None = None,
    version: Version = None,
    build_if_missing: bool = False,
    forge_block: BlockName | None = None,
    store_block: BlockName = names.ARTIFACT_STORE,
    registry_block: BlockName = names.REGISTRY,
    engine_block: BlockName = names.BUILD_ENGINE,
) -> list[dict]:
    """Merge pipeline: load the artifact the PR run stored for this tree, build the image from it, push it.

    No application build runs unless ``build_if_missing`` is set and an artifact is missing.
    Images are tagged with the commit SHA, the branch and ``version`` (if given); a SHA already
    in the registry is not pushed again, so a re-run never changes its digest.

    Args:
        app: name of the Application block.
        sha: the merge commit (full SHA).
        branch: the branch the merge landed on (becomes a tag).
        pr: the merged pull request, to comment the pushed images on.
        version: an extra version tag (a git tag push).
        build_if_missing: build a component whose tree has no stored artifact instead of failing.
        forge_block: GitForge block to report to (statuses and a PR comment); none = no forge reports.
        store_block: ObjectStore block the artifacts are in.
        registry_block: ContainerRegistry block to push to.
        engine_block: DockerHostTarget block of the engine that builds the images.
    Raises:
        ArtifactNotFound: no artifact for a component's tree (the key is named), or its PR tests failed.
        PipelineFailed: an image failed to build or push.
    """
    cfg = common.load_config(app, store_block, forge_block)
    registry = ContainerRegistry.load(registry_block)
    engine = DockerHostTarget.load(engine_block)
    tags = [sha, branch_tag(branch)] + ([version] if version else [])
    title = f"opsflow GitOps · {cfg.application.name} · merge"
    key = common.report_key("gitops-merge", cfg.application.name)
    with common.reported_components(cfg, sha, CONTEXT, pr, title, key, "building the images") as result:
        try:
            with common.workspace() as cleanup:
                checkout = clone_repo(cfg.application.repository, sha, **cfg.clone_auth)
                cleanup.append(checkout.path)
                plans = find_artifacts(cfg, checkout, build_if_missing)
                result.components = package_and_push(cfg, checkout, plans, tags, registry, engine, cleanup)
        finally:
            prune_build_images(engine)
    common.raise_if_failed(result.components)
    return [o.__dict__ for o in result.components]
