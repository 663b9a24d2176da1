"""One manual deploy on one target: take the target's deploy lock, roll every component out
(Docker host rolling or blue-green, Kubernetes, SSH script), record what runs; and the results
table of a deploy to several targets."""

from __future__ import annotations

from prefect import get_run_logger, runtime, task
from prefect.artifacts import create_table_artifact

from blocks import ContainerRegistry, ObjectStore
from blocks.application import DeployMethod
from opsflow.core.errors import DeployFailed
from tasks.deploy.bluegreen import ensure_proxy_image, rollout_blue_green
from tasks.deploy.docker_host import rollout_docker
from tasks.deploy.k8s import rollout_kubernetes
from tasks.deploy.lock import ensure_deploy_lock, hold_deploy_lock
from tasks.deploy.plan import ComponentRelease, bash_script, powershell_script
from tasks.deploy.records import DeployedImage, DeployRecord, record_deploy
from tasks.deploy.ssh_host import run_deploy_script


@task(name="deploy-to-target", task_run_name="deploy-{app}-to-{target}")
def deploy_to_target(app: str, version: str, target: str, kind: str, target_block, registry: ContainerRegistry,
                     releases: list[ComponentRelease], store: ObjectStore) -> list[dict]:
    """Roll every component out on one target, holding that target's deploy lock, and record
    what runs there. Raises what the rollout raised (after its rollback)."""
    windows = kind == "ssh" and target_block.os.value == "windows"
    lock = ensure_deploy_lock(f"deploy-{app}-{target}")
    results = []
    holder = {"type": "task_run", "id": str(runtime.task_run.id)} if runtime.task_run.id else None
    with hold_deploy_lock(lock, holder=holder, timeout_s=3600, logger=get_run_logger()):
        for release in releases:
            if kind == "kubernetes":
                health, previous_image = rollout_kubernetes(target_block, release), None
            elif kind == "ssh":
                script = powershell_script(release) if windows else bash_script(release)
                output = run_deploy_script(target_block, script, registry=registry)
                health, previous_image = (output.strip().splitlines() or ["done"])[-1], None
            else:
                if release.method == DeployMethod.blue_green:
                    outcome = rollout_blue_green(target_block, registry, release, ensure_proxy_image(target_block))
                else:
                    outcome = rollout_docker(target_block, registry, release)
                health, previous_image = outcome.message, outcome.previous_image
            results.append({"component": release.component, "image": release.image, "version": release.version,
                            "previous": previous_image, "health": health})
        record_deploy(store, DeployRecord(
            app=app, target=target, target_kind=kind,
            images=[DeployedImage(component=r.component, repository=r.image.split("@")[0],
                                  digest=r.image.split("@")[1],
                                  tag=version if not version.startswith("sha256:") else None)
                    for r in releases],
            previous=[DeployedImage(component=x["component"], repository=x["previous"].split("@")[0],
                                    digest=x["previous"].split("@")[1]) for x in results if x["previous"]],
            flow_run_id=str(runtime.flow_run.id) if runtime.flow_run.id else None))
    return results


def report_outcomes(app: str, version: str, targets: list[str], outcomes: dict) -> dict:
    """The per-target results table artifact of the flow run; raises when any target failed,
    listing them (a single target's own error as it was). Called in the flow, not a task: the
    outcomes hold the targets' exceptions, which are no task parameters."""
    rows = []
    for target in targets:
        got = outcomes[target]
        if isinstance(got, BaseException):
            rows.append({"target": target, "result": "FAILED", "components": "", "detail": str(got).splitlines()[0]})
        else:
            rows.append({"target": target, "result": "deployed", "components": ", ".join(
                f"{r['component']} {r['version']}" for r in got), "detail": "; ".join(r["health"] for r in got)})
    create_table_artifact(table=rows, key=f"deploy-{app}-results", description=f"Deploy of {app} {version}")
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
