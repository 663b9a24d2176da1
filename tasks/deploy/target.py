"""One manual deploy on one target: take the target's deploy lock, roll every component role out
(Docker host rolling or blue-green, a compose project, Kubernetes, SSH script), record what runs;
and the results table of a deploy to several targets."""

from __future__ import annotations

import contextlib

from prefect import get_run_logger, runtime, task
from prefect.artifacts import acreate_table_artifact

from blocks import ContainerRegistry, ObjectStore
from opsflow.core.errors import DeployFailed
from opsflow.core.threads import ContextThreadPool
from tasks.deploy.compose_rollout import rollout_compose
from tasks.deploy.docker_host import RolloutResult, rollout_docker
from tasks.deploy.k8s import rollout_kubernetes
from tasks.deploy.lock import deploy_lock_name, hold_deploy_lock
from tasks.deploy.plan import ComponentRelease, bash_script, powershell_script
from tasks.deploy.records import DeployedImage, DeployRecord, merged_record, read_deploy_record, write_deploy_record
from tasks.deploy.ssh_host import run_deploy_script


def _image(release: ComponentRelease, image: str, replicas: int, tag: str | None = None) -> DeployedImage:
    repository, digest = image.split("@", 1)
    return DeployedImage(component=release.component, role=release.role, repository=repository, digest=digest,
                         tag=tag, replicas=replicas)


def _roll_out(release: ComponentRelease, kind: str, target_block, registry: ContainerRegistry) -> RolloutResult:
    if kind == "kubernetes":
        health = rollout_kubernetes(target_block, release)
        return RolloutResult(release.key, release.version, None, True, False, health, replicas=release.replicas)
    if kind == "ssh":
        windows = target_block.os.value == "windows"
        output = run_deploy_script(target_block, powershell_script(release) if windows else bash_script(release),
                                   registry=registry)
        return RolloutResult(release.key, release.version, None, True, False,
                             (output.strip().splitlines() or ["done"])[-1], replicas=min(release.replicas, 1))
    return rollout_docker(target_block, registry, release)


@task(name="deploy-to-target", task_run_name="deploy-{app}-to-{target}")
def deploy_to_target(app: str, version: str, target: str, kind: str, target_block, registry: ContainerRegistry,
                     releases: list[ComponentRelease], store: ObjectStore, lock_held: bool = False) -> list[dict]:
    """Roll every release (component role) out on one target, holding that target's deploy lock,
    and record what runs there: the new images of the roles that were deployed, the previous ones,
    and (merged from the earlier record) the roles this deploy did not touch. When a role fails,
    the ones deployed before it are recorded as they run, then the error is raised (after its
    rollback). The lock (created on a target's first deploy) and the record are plain calls, no
    task runs of their own; the record is read while the roles roll out. ``lock_held``: the caller
    holds the target's lock (``deploy_lock_name``) for the whole call (the flow takes it beside its
    other work), so this task does not take it again."""
    results: list[dict] = []
    done: list[tuple[ComponentRelease, RolloutResult]] = []
    holder = {"type": "task_run", "id": str(runtime.task_run.id)} if runtime.task_run.id else None
    tag = version if not version.startswith("sha256:") else None
    lock = (contextlib.nullcontext() if lock_held else
            hold_deploy_lock(deploy_lock_name(app, target), holder=holder, timeout_s=3600, logger=get_run_logger(),
                             create=True))
    with lock, ContextThreadPool(max_workers=1, thread_name_prefix="deploy-record") as pool:
        # The record is read under the lock (no other deploy writes it meanwhile), beside the rollout.
        reading = pool.submit(read_deploy_record, store, app, target)
        try:
            if kind == "docker" and target_block.compose_project:
                done = list(zip(releases, rollout_compose(target_block, registry, releases), strict=True))
            else:
                for release in releases:
                    done.append((release, _roll_out(release, kind, target_block, registry)))
        finally:
            if done:
                before = reading.result()
                write_deploy_record(store, merged_record(before, DeployRecord(
                    app=app, target=target, target_kind=kind,
                    images=[_image(r, r.image, out.replicas, tag) for r, out in done],
                    previous=[_image(r, out.previous_image, 1) for r, out in done if out.previous_image],
                    flow_run_id=str(runtime.flow_run.id) if runtime.flow_run.id else None)))
    for release, outcome in done:
        results.append({"component": release.key, "image": release.image, "version": release.version,
                        "previous": outcome.previous_image, "health": outcome.message,
                        "replicas": outcome.replicas})
    return results


async def report_outcomes(app: str, version: str, targets: list[str], outcomes: dict) -> dict:
    """The per-target results table artifact of the flow run; raises when any target failed,
    listing them (a single target's own error as it was). Awaited in the (async) flow, not a task:
    the outcomes hold the targets' exceptions, which are no task parameters."""
    rows = []
    for target in targets:
        got = outcomes[target]
        if isinstance(got, BaseException):
            rows.append({"target": target, "result": "FAILED", "components": "", "detail": str(got).splitlines()[0]})
        else:
            rows.append({"target": target, "result": "deployed", "components": ", ".join(
                f"{r['component']} {r['version']}" + (" (0 replicas)" if r.get("replicas") == 0 else "")
                for r in got), "detail": "; ".join(r["health"] for r in got)})
    await acreate_table_artifact(table=rows, key=f"deploy-{app}-results", description=f"Deploy of {app} {version}")
    failed = [t for t in targets if isinstance(outcomes[t], BaseException)]
    if failed:
        if len(targets) == 1:
            raise outcomes[failed[0]]
        raise DeployFailed(f"deploy of {app} {version} failed on {len(failed)} of {len(targets)} targets: "
                           + "; ".join(f"{t}: {str(outcomes[t]).splitlines()[0]}" for t in failed)
                           + ". Each failed target was rolled back; the other targets run the new version.")
    print(f"deployed {app} {version} to {', '.join(targets)}")
    return {"app": app, "version": version,
            "targets": {t: {"components": outcomes[t]} for t in targets}}
