"""Scheduled registry cleanup: lifecycle rules, never what runs; dry run unless ``apply``."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import Field

from blocks import ContainerRegistry, DockerHostTarget, KubernetesTarget, ObjectStore, names
from blocks.cleanup_policy import CleanupRule, RegistryCleanupPolicy, policy_from_dict
from blocks.fields import BlockName
from tasks.registry.apply import apply_registry_cleanup
from tasks.registry.gc import collect_registry_garbage, verify_kept_images
from tasks.registry.in_use import find_deployed_images, find_pod_images, find_running_images
from tasks.registry.inventory import Inventory, find_referrers, inventory_registry
from tasks.registry.plan import CleanupPlan, ImageRecord, plan_cleanup

PLAN_KEY = "registry-cleanup-plan"


def _policy(policy_block: str, rules: list[CleanupRule] | None, always_keep: list[str] | None) -> RegistryCleanupPolicy:
    """The block's policy, with the run form's overrides (validated the same way)."""
    base = RegistryCleanupPolicy.load(policy_block)
    data = base.model_dump(include={"rules", "always_keep", "untag_shared", "repositories"})
    if rules:
        data["rules"] = [r.model_dump() for r in rules]
    if always_keep is not None:
        data["always_keep"] = always_keep
    return policy_from_dict(data, source=f"block {policy_block!r} with this run's overrides")


@task(name="plan-registry-cleanup", task_run_name="plan-registry-cleanup")
def make_cleanup_plan(inventory: Inventory, policy: RegistryCleanupPolicy, in_use: set[str], apply: bool,
                      referrers: list[ImageRecord] | None = None) -> CleanupPlan:
    """Plan the cleanup and publish it: a table artifact (every tag and its verdict) and a summary."""
    plan = plan_cleanup([*inventory.images, *(referrers or [])], policy, in_use, existing=inventory.existing)
    create_table_artifact(
        key=PLAN_KEY, description=f"Registry cleanup plan ({'applied' if apply else 'dry run'}; repositories "
                                  f"from {inventory.source})",
        table=[{"repository": r.repository, "tag": r.tag, "digest": r.digest[:19],
                "created": r.created.isoformat(timespec="seconds") if r.created else "", "size": r.size,
                "rule": r.rule, "action": r.action, "reason": r.reason} for r in plan.rows])
    return plan


@flow(name="registry-cleanup", flow_run_name="registry-cleanup-{registry_block}", log_prints=True)
def registry_cleanup(
    registry_block: BlockName = names.REGISTRY,
    policy_block: BlockName = names.CLEANUP_POLICY,
    rules: Annotated[list[CleanupRule] | None, Field(
        description="Replace the policy block's rules for this run (same validation).")] = None,
    always_keep: Annotated[list[str] | None, Field(
        description="Replace the policy's always-keep patterns for this run.")] = None,
    repositories: Annotated[list[str] | None, Field(
        description="Only these repositories (globs or 're:<regex>'); all when empty. Where the registry refuses "
        "to list its catalog, exact names here (and the policy's repositories) are what is cleaned.")] = None,
    docker_hosts: Annotated[list[BlockName], Field(
        description="Docker host blocks whose containers' images are in use.")] = (names.BUILD_ENGINE, names.EDGE_NODE),
    kubernetes_targets: Annotated[list[BlockName] | None, Field(
        description="Kubernetes target blocks whose pods' images are in use.")] = None,
    deploy_records_store: Annotated[BlockName | None, Field(
        description="Object store block holding the manual deploys' records.")] = names.ARTIFACT_STORE,
    apply: Annotated[bool, Field(description="Delete for real. Off: only plan and show (dry run).")] = False,
    garbage_collect: Annotated[bool, Field(
        description="After deleting, run the registry's garbage collection.")] = True,
    concurrency: Annotated[int, Field(ge=1, le=32, description="Registry API calls at a time when applying.")] = 8,
) -> dict:
    """Apply the registry's lifecycle rules: plan from the policy, exclude every image in use,
    show the plan, and (with ``apply``) delete exactly the plan, then collect the garbage.

    Args:
        registry_block: ContainerRegistry block of the registry to clean.
        policy_block: RegistryCleanupPolicy block with the lifecycle rules.
        rules: replace the policy's rules for this run (same validation as the block).
        always_keep: replace the policy's always-keep patterns for this run.
        repositories: only these repositories (globs or 're:<regex>'); all when empty. Exact names here and in
            the policy's ``repositories`` are the inventory where the registry refuses its catalog.
        docker_hosts: Docker host blocks whose containers' images count as in use.
        kubernetes_targets: Kubernetes target blocks whose pods' images count as in use.
        deploy_records_store: object store block with the manual deploys' records (in use too).
        apply: delete for real; off (the default) only plans and shows the plan.
        garbage_collect: after deleting, run the registry's garbage collection (its gc_command).
        concurrency: registry API calls at a time when applying (1-32).
    Returns:
        The plan summary (tags, manifests and bytes selected, where the repository list came from) and,
        when applied, what was deleted, the bytes garbage collection freed and the kept tags verified after it.
    Raises:
        InvalidInput: an invalid policy (the rule is named), before anything is read or deleted; a registry
            that refuses its catalog while no repository is listed by name.
        RegistryBroken: after garbage collection a kept tag no longer resolves or pulls (they are named).
    """
    policy = _policy(policy_block, rules, always_keep)
    registry = ContainerRegistry.load(registry_block)
    engines = [DockerHostTarget.load(name) for name in docker_hosts]
    clusters = [KubernetesTarget.load(name) for name in kubernetes_targets or []]
    store = ObjectStore.load(deploy_records_store) if deploy_records_store else None

    in_use: set[str] = set()
    for found in [*(find_running_images.submit(e) for e in engines), *(find_pod_images.submit(c) for c in clusters),
                  *([find_deployed_images.submit(store)] if store else [])]:
        in_use |= found.result()
    inventory = inventory_registry(registry, repositories or None, listed=[*policy.repositories, *(repositories or [])])
    # Referrers (signatures pushed with a subject) of what the rules delete go with it: ask the registry for them.
    first = plan_cleanup(inventory.images, policy, in_use, existing=inventory.existing)
    referrers = find_referrers(registry, first.deletions()) if first.deletions() else []
    plan = make_cleanup_plan(inventory, policy, in_use, apply, referrers)
    summary = {**plan.summary(), "in_use_digests": len(in_use), "applied": apply,
               "repositories": len(inventory.repositories), "inventory": inventory.source}
    if apply and plan.selected:
        result = apply_registry_cleanup(registry, plan, concurrency)
        summary.update(deleted_manifests=len(result.deleted_manifests), untagged=len(result.untagged),
                       already_gone=len(result.already_gone), apply_seconds=round(result.seconds, 2))
        if garbage_collect:
            summary["bytes_freed"] = collect_registry_garbage(registry)
            if registry.gc_command:
                summary["verified_tags"] = verify_kept_images(registry, plan, concurrency)
    mode = "applied" if apply else "dry run: nothing was deleted"
    lines = [f"# Registry cleanup of {registry.url} ({mode})", "",
             f"- repositories: {summary['repositories']}, from {inventory.source}",
             f"- tags examined: {summary['tags']}, digests in use: {summary['in_use_digests']}",
             (f"- manifests to delete: {summary['delete_manifests']} ({summary['delete_tags']} tags), "
             f"tags to untag: {summary['untag']}, kept: {summary['keep']}"),
             f"- reclaimable: up to {summary['reclaimable_bytes']:,} bytes"]
    if "deleted_manifests" in summary:
        lines.append(f"- deleted {summary['deleted_manifests']} manifests, untagged {summary['untagged']} tags in "
                     f"{summary['apply_seconds']} s")
    if summary.get("bytes_freed") is not None:
        lines.append(f"- garbage collection freed {summary['bytes_freed']:,} bytes")
    if "verified_tags" in summary:
        lines.append(f"- after garbage collection all {summary['verified_tags']} kept tags still resolve and pull")
    create_markdown_artifact(markdown="\n".join(lines) + "\n", key="registry-cleanup-summary",
                             description="Registry cleanup summary")
    print("\n".join(lines[2:]))
    return summary
