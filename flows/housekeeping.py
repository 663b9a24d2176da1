"""Scheduled housekeeping: build-artifact retention in object storage and Docker host pruning."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import Field

from blocks import ContainerRegistry, DockerHostTarget, ObjectStore, names
from blocks.fields import BlockName
from tasks.artifacts.retention import (
    RetentionRow,
    delete_build_artifacts,
    find_deployed_commits,
    list_build_artifacts,
    plan_artifact_retention,
)
from tasks.images.prune import PruneRow, apply_docker_prune, plan_docker_prune


@task(name="publish-housekeeping-plan", task_run_name="publish-housekeeping-plan")
def publish_plan(artifact_rows: list[RetentionRow], prune_rows: list[PruneRow], apply: bool) -> None:
    """The plan as two table artifacts (build artifacts, Docker hosts)."""
    suffix = " (applied)" if apply else " (dry run)"
    create_table_artifact(key="build-artifact-retention", description="Build artifact retention" + suffix, table=[
        {"key": r.key, "app": r.app, "component": r.component, "commit": r.commit[:12],
         "created": r.created.isoformat(timespec="seconds") if r.created else "", "size": r.size,
         "action": r.action, "reason": r.reason} for r in artifact_rows])
    create_table_artifact(key="docker-host-prune", description="Docker host pruning" + suffix, table=[
        {"host": r.host, "kind": r.kind, "id": r.id, "name": r.name,
         "age_days": round(r.age_days, 1) if r.age_days is not None else "", "size": r.size, "action": r.action,
         "reason": r.reason} for r in prune_rows])


@flow(name="housekeeping", flow_run_name="housekeeping-{store_block}", log_prints=True)
def housekeeping(
    store_block: BlockName = names.ARTIFACT_STORE,
    registry_block: BlockName = names.REGISTRY,
    keep_newest: Annotated[int, Field(ge=0, le=10_000)] = 10,
    older_than_days: Annotated[float, Field(ge=0, le=36_500)] = 30,
    docker_hosts: list[BlockName] = (names.BUILD_ENGINE, names.EDGE_NODE),
    stopped_older_than_days: Annotated[float, Field(ge=0, le=36_500)] = 7,
    build_cache_budget_gib: Annotated[float, Field(ge=0, le=10_000)] = 10,
    apply: bool = False,
) -> dict:
    """Build-artifact retention and Docker host pruning; a dry run unless ``apply``.

    Args:
        store_block: ObjectStore block of the build artifacts.
        registry_block: ContainerRegistry block, to find the commits deployed images were built from.
        keep_newest: artifacts kept per app and component whatever their age.
        older_than_days: older artifacts beyond the newest are deleted, unless a deployed image uses them.
        docker_hosts: Docker host blocks to prune (build server, edge nodes).
        stopped_older_than_days: stopped containers older than this are removed.
        build_cache_budget_gib: build cache above this size is trimmed.
        apply: delete for real; off (the default) only shows the plan.
    Returns:
        Counts and bytes: planned and, when applied, freed.
    """
    store = ObjectStore.load(store_block)
    registry = ContainerRegistry.load(registry_block)
    engines = [DockerHostTarget.load(name) for name in docker_hosts]
    budget = int(build_cache_budget_gib * (1 << 30))

    protected = find_deployed_commits(store, registry)
    artifact_rows = plan_artifact_retention(list_build_artifacts(store), keep_newest, older_than_days, protected)
    prune_rows = [row for engine in engines
                  for row in plan_docker_prune(engine, stopped_older_than_days, budget)]
    publish_plan(artifact_rows, prune_rows, apply)
    summary = {"artifacts": len(artifact_rows), "artifacts_to_delete": sum(r.action == "delete" for r in artifact_rows),
               "artifact_bytes": sum(r.size for r in artifact_rows if r.action == "delete"),
               "docker_to_remove": sum(r.action == "remove" for r in prune_rows), "applied": apply}
    if apply:
        summary["artifact_bytes_freed"] = delete_build_artifacts(store, artifact_rows)
        summary["docker_bytes_freed"] = sum(apply_docker_prune(e, prune_rows, budget) for e in engines)
    mode = "applied" if apply else "dry run: nothing was deleted"
    create_markdown_artifact(key="housekeeping-summary", description="Housekeeping summary", markdown=(
        f"# Housekeeping ({mode})\n\n- build artifacts: {summary['artifacts']}, to delete "
        f"{summary['artifacts_to_delete']} ({summary['artifact_bytes']:,} bytes)\n"
        f"- Docker hosts: {summary['docker_to_remove']} items to remove\n"))
    print(summary)
    return summary
