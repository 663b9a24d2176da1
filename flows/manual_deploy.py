"""Manual deploy: pick an application, a version, resources and a target; see the plan; run it;
health-gated, with automatic rollback."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact
from prefect.concurrency.sync import concurrency
from prefect.flow_runs import pause_flow_run
from pydantic import Field

from blocks import Application, ContainerRegistry, DockerHostTarget, KubernetesTarget, ObjectStore, SshHostTarget
from blocks.application import DeployMethod
from blocks.fields import Cpu, Memory, Name
from opsflow.errors import InvalidInput
from tasks.deploy_docker import rollout_docker, running_specs
from tasks.deploy_kubernetes import rollout_kubernetes
from tasks.deploy_plan import (
    ComponentRelease,
    bash_script,
    docker_container_specs,
    kubernetes_manifests,
    powershell_script,
    spec_diff,
)
from tasks.deploy_records import DeployedImage, DeployRecord, record_deploy
from tasks.deploy_ssh import run_deploy_script
from tasks.registry_api import lookup_image

TargetKind = Literal["docker", "kubernetes", "ssh"]
_TARGET_BLOCKS = {"docker": DockerHostTarget, "kubernetes": KubernetesTarget, "ssh": SshHostTarget}


@task(name="ensure-deploy-lock", task_run_name="ensure-deploy-lock-{name}")
def ensure_deploy_lock(name: str) -> str:
    """The global concurrency limit (1 slot) that makes deploys of one app to one target take turns."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass
    return name


@task(name="resolve-release", task_run_name="resolve-{component}")
def resolve_release(registry: ContainerRegistry, app: Application, component: str, version: str, replicas: int,
                    cpu: str, memory: str, method: DeployMethod) -> ComponentRelease:
    """The component's image by digest (a tag is looked up in the registry; a digest must exist)."""
    comp = app.component(component)
    repository = registry.repository(f"{app.name}-{comp.name}")
    digest = lookup_image.fn(registry, repository, version)
    if digest is None:
        raise InvalidInput(f"{repository}:{version} is not in the registry {registry.url}; "
                           "pick a tag or digest the GitOps merge pipeline pushed")
    short = version if not version.startswith("sha256:") else version[7:19]
    return ComponentRelease(app=app.name, component=comp.name, image=f"{repository}@{digest}", version=short,
                            replicas=replicas, cpu=cpu, memory=memory, ports=comp.ports,
                            health_path=comp.health_check.path if comp.health_check else None,
                            health_deadline_s=comp.health_check.deadline_s if comp.health_check else 60,
                            method=method)


@task(name="publish-deploy-plan", task_run_name="publish-deploy-plan-{target}")
def publish_plan(releases: list[ComponentRelease], kind: str, target: str, current: dict[str, list[dict]],
                 namespace: str = "default", windows: bool = False) -> str:
    """Render the plan for the target, with a diff against what runs now, as a markdown artifact."""
    parts = [f"# Deploy plan: {releases[0].app} → {target} ({kind})", ""]
    for rel in releases:
        parts.append(f"## {rel.component}: `{rel.image}` ({rel.version}), {rel.replicas} × {rel.cpu} CPU / "
                     f"{rel.memory}, {rel.method.value}")
        if kind == "docker":
            planned = docker_container_specs(rel)
            parts += ["```json", *json.dumps(planned, indent=2, default=str).splitlines(), "```"]
            diff = spec_diff(current.get(rel.component, []), planned, rel.base_name)
            parts += ["Changes against what runs now:", "```diff", diff or "(no running containers)", "```"]
        elif kind == "kubernetes":
            import yaml

            parts += ["```yaml", yaml.safe_dump_all(kubernetes_manifests(rel, namespace), sort_keys=False), "```"]
        else:
            script = powershell_script(rel) if windows else bash_script(rel)
            parts += ["```powershell" if windows else "```bash", script, "```"]
    markdown = "\n".join(parts) + "\n"
    create_markdown_artifact(markdown=markdown, key=f"deploy-plan-{releases[0].app}-{target}",
                             description=f"Deploy plan for {target}")
    return markdown


@flow(name="manual-deploy", flow_run_name="deploy-{app}-{target}", log_prints=True)
def manual_deploy(
    app: Name,
    version: Annotated[str, Field(pattern=r"^([A-Za-z0-9_][A-Za-z0-9._-]{0,127}|sha256:[0-9a-f]{64})$")],
    target: Name = "edge-local",
    target_kind: TargetKind = "docker",
    components: list[Name] | None = None,
    replicas: Annotated[int | None, Field(ge=0, le=100)] = None,
    cpu: Cpu | None = None,
    memory: Memory | None = None,
    method: DeployMethod | None = None,
    approve: bool = False,
    registry_block: str = "local-registry",
    records_store: str = "opsflow-artifacts",
) -> dict:
    """Deploy ``version`` of an application to a target: plan, optional approval, health-gated
    rollout, automatic rollback.

    Args:
        app: Application block name.
        version: image tag (e.g. the commit SHA or a release tag) or digest, for every component.
        target: name of the target block (Docker host / edge node, Kubernetes target, SSH host).
        target_kind: docker, kubernetes or ssh: the type of the target block.
        components: components to deploy; all of the application's when empty.
        replicas: instances per component (default: the application's deploy defaults).
        cpu: CPU per instance, a Kubernetes quantity such as 250m (default: the application's).
        memory: memory per instance, such as 256Mi (default: the application's).
        method: rolling or blue-green (default: the application's).
        approve: pause after showing the plan until someone resumes the run in the UI.
        registry_block: ContainerRegistry block the images are in.
        records_store: ObjectStore block where deploys are recorded (registry cleanup reads them).
    Returns:
        Per component: image, version, previous image and the health result.
    Raises:
        InvalidInput: unknown component or version, before anything changes.
        DeployFailed: a component was not healthy in time; it was rolled back.
    """
    logger = get_run_logger()
    application = Application.load(app)
    registry = ContainerRegistry.load(registry_block)
    target_block = _TARGET_BLOCKS[target_kind].load(target)
    store = ObjectStore.load(records_store)
    names = components or [c.name for c in application.components]
    unknown = sorted(set(names) - {c.name for c in application.components})
    if unknown:
        raise InvalidInput(f"application {app!r} has no component(s) {unknown}")
    chosen_method = method or application.deploy.method
    if target_kind == "docker" and chosen_method == DeployMethod.blue_green:  # Kubernetes has it
        raise InvalidInput("blue-green deploys to Docker hosts are not available yet; use method=rolling")
    releases = [resolve_release(registry, application, name, version, replicas if replicas is not None
                                else application.deploy.replicas, cpu or application.deploy.cpu,
                                memory or application.deploy.memory, chosen_method) for name in names]
    current = {r.component: running_specs(target_block, app, r.component) for r in releases} \
        if target_kind == "docker" else {}
    publish_plan(releases, target_kind, target, current, getattr(target_block, "namespace", "default"),
                 getattr(target_block, "os", None) == "windows")
    if approve:
        logger.info("waiting for approval: resume this run in the Prefect UI to deploy, cancel it to stop")
        pause_flow_run(timeout=24 * 3600)
    windows = target_kind == "ssh" and target_block.os.value == "windows"

    lock = ensure_deploy_lock(f"deploy-{app}-{target}")
    results = []
    with concurrency(lock, occupy=1, timeout_seconds=3600, strict=True):
        for release in releases:
            if target_kind == "kubernetes":
                health, previous_image = rollout_kubernetes(target_block, release), None
            elif target_kind == "ssh":
                script = powershell_script(release) if windows else bash_script(release)
                output = run_deploy_script(target_block, script)
                health, previous_image = (output.strip().splitlines() or ["done"])[-1], None
            else:
                outcome = rollout_docker(target_block, registry, release)
                health, previous_image = outcome.message, outcome.previous_image
            results.append({"component": release.component, "image": release.image, "version": release.version,
                            "previous": previous_image, "health": health})
        record_deploy(store, DeployRecord(
            app=app, target=target, target_kind=target_kind,
            images=[DeployedImage(component=r.component, repository=r.image.split("@")[0],
                                  digest=r.image.split("@")[1], tag=version if not version.startswith("sha256:") else None)
                    for r in releases],
            previous=[DeployedImage(component=x["component"], repository=x["previous"].split("@")[0],
                                    digest=x["previous"].split("@")[1]) for x in results if x["previous"]],
            flow_run_id=str(runtime.flow_run.id) if runtime.flow_run.id else None))
    print(f"deployed {app} {version} to {target}: " + ", ".join(f"{r['component']} ({r['health']})" for r in results))
    return {"app": app, "target": target, "components": results}
