"""GitOps, merge side: the artifact the pull request built and tested becomes the image that is pushed.

Task runs are kept where the UI shows something a user watches or acts on: the fetch, each artifact's
download and verification, each base image (built when the engine lacks it), each image build and push,
a tag move, the workspace cleanup and the prune. The registry tag lookups and the artifact metadata reads
are plain calls in threads beside them (each has its own retries within a deadline: ``opsflow.registry.v2``
and the object store's boto3 config). Each component's build and push are called with values in a thread of
their own, not submitted with futures as arguments: Prefect reads an unfinished future argument's state from
the API before the task starts (``prefect.tasks._infer_parent_task_runs``), a round trip on the image's
path (measured 1.1-1.8 s each at load 12, four per merge of two components).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated

from prefect import get_run_logger
from pydantic import Field

from blocks import ContainerRegistry, DockerHostTarget, names
from blocks.fields import BlockName, Branch, ImageTag, Name, PrNumber, Sha
from flows import common
from flows.options import UNPERSISTED_RESULT, flow
from opsflow.core.errors import ArtifactNotFound
from opsflow.core.threads import ContextThreadPool
from tasks.artifacts.store import ArtifactPlan, load_artifact, read_plan, save_artifact
from tasks.build import build_app
from tasks.build.caches import TreeCache
from tasks.build.deps import install_deps
from tasks.env_files import fetch_env_files, redaction_list
from tasks.git import Checkout, clone_repo
from tasks.images.base import ensure_base_image
from tasks.images.build import build_image
from tasks.images.prune import prune_build_images
from tasks.images.push import push_image
from tasks.images.tag import tag_image
from tasks.registry.lookup import lookup_tags
from tasks.summaries import ComponentOutcome, tests_passed

CONTEXT = "opsflow/gitops-merge"
Version = Annotated[ImageTag | None, Field(description="Version tag to add (for a git tag push), e.g. 1.4.2.")]


def branch_tag(branch: str) -> str:
    """An image tag for a branch name: ``feature/x`` → ``feature-x``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", branch).strip(".-")[:128] or "branch"


@dataclass(frozen=True)
class TagPlan:
    """What a merge does with one image's tags: the digest its commit tag has, the tags to add, conflicts."""

    digest: str | None  # the image already pushed for this commit, if any
    add: list[str]
    conflicts: list[str]


def plan_tags(found: dict[str, str | None], sha_tag: str, version: str | None) -> TagPlan:
    """Which of the requested tags a merge must push or move (pure).

    The commit tag is never moved once pushed; a branch tag moves to the new image; a version tag that
    already names another image is a conflict (a release tag does not change), refused before any push.
    """
    digest = found.get(sha_tag)
    add = [t for t, d in found.items() if d is None or d != digest] if digest else list(found)
    conflicts = [version] if version and found.get(version) and found[version] != digest else []
    return TagPlan(digest=digest, add=[t for t in add if t not in conflicts], conflicts=conflicts)


def find_artifacts(cfg: common.PipelineConfig, checkout: Checkout, build_if_missing: bool,
                   pool: ContextThreadPool) -> dict[str, ArtifactPlan]:
    """The stored artifact of every component's tree (metadata read side by side in ``pool``); refuses
    untested-and-failed or missing ones.

    With ``build_if_missing``, a missing artifact is built (and stored) here instead, in a full checkout.
    """
    logger = get_run_logger()
    application, store = cfg.application, cfg.store
    futures = {c.name: pool.submit(read_plan, store, checkout, application.name, c)
               for c in application.components}
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
        with common.workspace() as paths:
            full = clone_repo(application.repository, checkout.sha, **cfg.clone_auth)
            paths.append(full.root)
            cache = TreeCache.from_env()
            comps = [application.component(p.component) for p in missing]
            for comp in comps:
                install_deps(full, comp, cache)
            cfg.secrets = cfg.secrets or common.load_secrets(application)
            written = fetch_env_files(full, application.env_files, cfg.secrets)
            redact = redaction_list(full, written, application.env_files, common.public_names(application))
            for plan, comp in zip(missing, comps, strict=True):
                logger.warning("no artifact for %s: building it (build_if_missing)", plan.component)
                saved = save_artifact(store, plan, build_app(full, comp, redact, cache=cache), comp, full)
                plans[plan.component] = replace(plan, exists=True, metadata=saved.metadata)
    untested = [p.component for p in plans.values() if not p.metadata.get("tests")]
    if untested:
        logger.warning("artifacts of %s were never tested", ", ".join(untested))
    return plans


def _needs_base(comp, plan: ArtifactPlan) -> str | None:
    """The opsflow base image kind a component's Dockerfile takes as ``BASE_IMAGE``, if it takes one."""
    image = (plan.metadata or {}).get("image")
    uses = image["base_image_arg"] if image else True  # artifacts stored before the metadata said
    return comp.base_image.split(":", 1)[1] if uses and comp.base_image.startswith("opsflow:") else None


def image_repositories(cfg: common.PipelineConfig, registry: ContainerRegistry) -> dict[str, str]:
    """The image repository of every component: ``<registry>/<app>-<component>``."""
    return {c.name: registry.repository(f"{cfg.application.name}-{c.name}") for c in cfg.application.components}


def build_and_push(engine: DockerHostTarget, registry: ContainerRegistry, loaded, base, build: dict,
                   outcome: ComponentOutcome, started: datetime) -> None:
    """One component's image, in a thread of the flow: its artifact (and base image) awaited, then built and
    pushed, each task called with values; ``outcome`` gets the image or the first step's error."""
    for step in (loaded, base):
        if step is not None:
            step.wait()
            if not step.state.is_completed():
                outcome.error = common.outcome_error(step.state)
                return
    args = dict(build.pop("build_args"))
    if base is not None:
        args["BASE_IMAGE"] = base.result()
    built = build_image(engine, loaded.result(), build_args=args, registry=registry, return_state=True, **build)
    final = push_image(engine, registry, built.result(), return_state=True) if built.is_completed() else built
    outcome.seconds = max((final.timestamp - started).total_seconds(), 0.0)
    if not final.is_completed():
        outcome.error = common.outcome_error(final)
        return
    image = final.result()
    outcome.image_ref, outcome.image_tags, outcome.tags_added = image.ref, image.tags, list(image.tags)


def package_and_push(cfg: common.PipelineConfig, checkout: Checkout, plans: dict[str, ArtifactPlan], tags: list[str],
                     version: str | None, registry: ContainerRegistry, engine: DockerHostTarget,
                     cleanup: list, lookups: dict, pool: ContextThreadPool) -> list[ComponentOutcome]:
    """Per component in parallel: the tags it lacks added to an image already pushed for this commit, or the
    artifact loaded, built into the image and pushed with every tag. ``lookups``: per component, the
    ``lookup_tags`` result (a future of ``pool``) for its repository and ``tags``."""
    logger = get_run_logger()
    application = cfg.application
    started = datetime.now(UTC)
    repositories = image_repositories(cfg, registry)
    bases: dict[str, object] = {}
    done, chains = [], []
    for comp in application.components:
        plan, repository = plans[comp.name], repositories[comp.name]
        outcome = ComponentOutcome(comp.name, plan.key, plan.metadata["digest"], plan.metadata["size"], True,
                                   tests=plan.metadata.get("tests"))
        found = lookups[comp.name].result()
        tag_plan = plan_tags(found, tags[0], version)
        if tag_plan.conflicts:
            outcome.error = (f"tag {version} of {repository} already names another image "
                             f"({found[version]}); a version tag is not moved: "
                             "tag the release with a new version")
            done.append(outcome)
            continue
        if tag_plan.digest:
            outcome.image_ref, outcome.image_tags = f"{repository}@{tag_plan.digest}", list(tags)
            if not tag_plan.add:
                logger.info("%s has every tag already (%s): nothing to push", repository, tag_plan.digest)
                done.append(outcome)
                continue
            logger.info("%s:%s is in the registry (%s): adding %s", repository, tags[0], tag_plan.digest,
                        ", ".join(tag_plan.add))
            chains.append((outcome, None, tag_image.submit(registry, repository, tag_plan.digest, tag_plan.add)))
            continue
        kind = _needs_base(comp, plan)
        build_args = dict(comp.build_args)
        if kind and kind not in bases:
            bases[kind] = ensure_base_image.submit(engine, kind)  # checked (or built) while the artifact loads
        if not kind and (plan.metadata.get("image") or {}).get("base_image_arg", True):
            build_args["BASE_IMAGE"] = comp.base_image
        loaded = load_artifact.submit(store=cfg.store, key=plan.key)
        build = {"repository": repository, "tags": tags, "revision": checkout.sha, "source": application.repository,
                 "build_args": build_args, "target": comp.target,
                 "labels": {"org.opencontainers.image.created": checkout.committed_at,
                            "dev.opsflow.artifact.key": plan.key,
                            "dev.opsflow.artifact.digest": plan.metadata["digest"]}}
        chains.append((outcome, loaded, pool.submit(build_and_push, engine, registry, loaded,
                                                    bases[kind] if kind else None, build, outcome, started)))
    for outcome, loaded, final in chains:
        if loaded is None:  # a tag move
            final.wait()
            outcome.seconds = max((final.state.timestamp - started).total_seconds(), 0.0)
            if final.state.is_completed():
                outcome.tags_added = final.result()
            else:
                outcome.error = common.outcome_error(final.state)
        else:
            final.result()  # build_and_push records every task's failure in the outcome
            if loaded.state.is_completed():
                cleanup.append(loaded.result().path)
        done.append(outcome)
    return common.in_component_order(application, done)


@flow(name="gitops-merge", flow_run_name="gitops-merge-{app}-{sha:.7}", log_prints=True,
      **UNPERSISTED_RESULT)
@common.config_read_first(extra=((ContainerRegistry, "registry_block"), (DockerHostTarget, "engine_block")))
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

    No application build runs unless ``build_if_missing`` is set and an artifact is missing; the
    commit is fetched without its files (its trees find the artifacts). Images are tagged with the
    commit SHA, the branch and ``version`` (if given). An image already pushed for the SHA is not
    built again: the tags it lacks (a version tag on a released commit, tags a partial push left out,
    the branch tag moving to it) are added in the registry, and the report says which.

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
    # The env file secrets only when an artifact is built here (find_artifacts loads them then).
    cfg = common.load_config(app, store_block, forge_block, with_secrets=False,
                             extra=((ContainerRegistry, registry_block), (DockerHostTarget, engine_block)))
    registry, engine = cfg.extra
    tags = [sha, branch_tag(branch)] + ([version] if version else [])
    title = f"opsflow GitOps · {cfg.application.name} · merge"
    key = common.report_key("gitops-merge", cfg.application.name)
    with common.reported_components(cfg, sha, CONTEXT, pr, title, key, "building the images") as result:
        pruned = None
        try:
            with common.workspace() as cleanup, \
                    ContextThreadPool(2 * len(cfg.application.components), thread_name_prefix="merge") as pool:
                # What the registry has for the tags is asked while the commit is fetched and its artifacts found.
                lookups = {name: pool.submit(lookup_tags, registry, repository, tags)
                           for name, repository in image_repositories(cfg, registry).items()}
                # The commit's trees are all the merge needs (artifacts are found by tree id): no files.
                checkout = clone_repo(cfg.application.repository, sha, files=False, **cfg.clone_auth)
                cleanup.append(checkout.root)
                plans = find_artifacts(cfg, checkout, build_if_missing, pool)
                result.components = package_and_push(cfg, checkout, plans, tags, version, registry, engine, cleanup,
                                                     lookups, pool)
                pruned = prune_build_images.submit(engine)  # the builds' dangling images go while the workspace does
        finally:
            if pruned is None:
                prune_build_images(engine)
            else:
                pruned.result()
    common.raise_if_failed(result.components)
    return [o.__dict__ for o in result.components]
