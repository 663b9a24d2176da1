"""Manual deploy: pick an application, a version, resources and one or more targets; see the
plan; run it, health-gated, with automatic rollback; several edge nodes are deployed concurrently."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.concurrency.sync import concurrency
from prefect.flow_runs import pause_flow_run
from prefect.futures import as_completed
from pydantic import Field

from blocks import Application, ContainerRegistry, DockerHostTarget, KubernetesTarget, ObjectStore, SshHostTarget
from blocks.application import DeployMethod
from blocks.fields import Cpu, Memory, Name
from opsflow.errors import DeployFailed, InvalidInput
from tasks.deploy_bluegreen import ensure_proxy_image, rollout_blue_green
from tasks.deploy_docker import rollout_docker, running_specs
from tasks.deploy_kubernetes import rollout_kubernetes
from tasks.deploy_plan import (
    ComponentRelease,
    bash_script,
    docker_container_specs,
    docker_proxy_spec,
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
    """The global concurrency limit (1 slot) that makes deploys of one app to one target take turns.
    Logs that this deploy waits when another one holds the slot."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            if client.read_global_concurrency_limit_by_name(name).active_slots:
                get_run_logger().warning("another deploy holds %s (one deploy per app and target at a time); "
                                         "waiting for it to finish", name)
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
def publish_plan(releases: list[ComponentRelease], kind: str, target: str, current: dict[str, list[dict] | str],
                 namespace: str = "default", windows: bool = False, network_mode: str = "host") -> str:
    """Render the plan for the target, with a diff against what runs now, as a markdown artifact."""
    parts = [f"# Deploy plan: {releases[0].app} → {target} ({kind})", ""]
    for rel in releases:
        parts.append(f"## {rel.component}: `{rel.image}` ({rel.version}), {rel.replicas} × {rel.cpu} CPU / "
                     f"{rel.memory}, {rel.method.value}")
        if kind == "docker":
            blue_green = rel.method == DeployMethod.blue_green
            planned = docker_container_specs(rel, network_mode, colour="blue" if blue_green else None)
            if blue_green:
                parts.append("The new version starts as the colour that is not live (shown as blue), is probed, "
                             f"then the proxy `{rel.base_name}-proxy` (ports {rel.ports}) switches to it and the "
                             "old colour stops.")
                planned.append(docker_proxy_spec(rel, "opsflow/bluegreen-proxy"))
            parts += ["```json", *json.dumps(planned, indent=2, default=str).splitlines(), "```"]
            running = current.get(rel.component, [])
            if isinstance(running, str):
                parts.append(f"**{running}**")
            else:
                diff = spec_diff(running, planned, rel.base_name)
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


@task(name="deploy-to-target", task_run_name="deploy-{app}-to-{target}")
def deploy_to_target(app: str, version: str, target: str, kind: TargetKind, target_block, registry: ContainerRegistry,
                     releases: list[ComponentRelease], store: ObjectStore) -> list[dict]:
    """Roll every component out on one target, holding that target's deploy lock, and record
    what runs there. Raises what the rollout raised (after its rollback)."""
    windows = kind == "ssh" and target_block.os.value == "windows"
    lock = ensure_deploy_lock(f"deploy-{app}-{target}")
    results = []
    with concurrency(lock, occupy=1, timeout_seconds=3600, strict=True):
        for release in releases:
            if kind == "kubernetes":
                health, previous_image = rollout_kubernetes(target_block, release), None
            elif kind == "ssh":
                script = powershell_script(release) if windows else bash_script(release)
                output = run_deploy_script(target_block, script)
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
                                  digest=r.image.split("@")[1], tag=version if not version.startswith("sha256:") else None)
                    for r in releases],
            previous=[DeployedImage(component=x["component"], repository=x["previous"].split("@")[0],
                                    digest=x["previous"].split("@")[1]) for x in results if x["previous"]],
            flow_run_id=str(runtime.flow_run.id) if runtime.flow_run.id else None))
    return results


def _or_error(result):
    """What runs on a target, or why it could not be read (that target's deploy fails later; the
    plan of the others goes on)."""
    return f"could not read what runs there: {result}" if isinstance(result, BaseException) else result


def _load(cls, name: str, what: str):
    try:
        return cls.load(name)
    except ValueError as exc:
        raise InvalidInput(f"there is no {what} block named {name!r}; create it in the Prefect UI "
                           "(Blocks) or with `opsflow stack up`, or pick an existing one") from exc


def _run_name() -> str:
    params = runtime.flow_run.parameters
    targets = params.get("targets") or ["?"]
    return f"deploy-{params.get('app')}-" + (targets[0] if len(targets) == 1 else f"{len(targets)}-targets")


@flow(name="manual-deploy", flow_run_name=_run_name, log_prints=True)
def manual_deploy(
    app: Name,
    version: Annotated[str, Field(pattern=r"^([A-Za-z0-9_][A-Za-z0-9._-]{0,127}|sha256:[0-9a-f]{64})$")],
    targets: Annotated[list[Name], Field(min_length=1, max_length=100)] = ["edge-local"],  # noqa: B006
    target_kind: TargetKind = "docker",
    components: list[Name] | None = None,
    replicas: Annotated[int | None, Field(ge=0, le=100)] = None,
    cpu: Cpu | None = None,
    memory: Memory | None = None,
    method: DeployMethod | None = None,
    approve: bool = False,
    max_parallel: Annotated[int, Field(ge=1, le=32)] = 4,
    registry_block: str = "local-registry",
    records_store: str = "opsflow-artifacts",
) -> dict:
    """Deploy ``version`` of an application to one or more targets: plan, optional approval,
    health-gated rollout, automatic rollback.

    Args:
        app: Application block name.
        version: image tag (e.g. the commit SHA or a release tag) or digest, for every component.
        targets: target block names (Docker hosts / edge nodes, Kubernetes targets or SSH hosts,
            all of kind ``target_kind``); several are deployed concurrently.
        target_kind: docker, kubernetes or ssh: the type of the target blocks.
        components: components to deploy; all of the application's when empty.
        replicas: instances per component (default: the application's deploy defaults).
        cpu: CPU per instance, a Kubernetes quantity such as 250m (default: the application's).
        memory: memory per instance, such as 256Mi (default: the application's).
        method: rolling or blue-green (default: the application's).
        approve: pause after showing the plan until someone resumes the run in the UI.
        max_parallel: targets deployed at the same time.
        registry_block: ContainerRegistry block the images are in.
        records_store: ObjectStore block where deploys are recorded (registry cleanup reads them).
    Returns:
        Per target: per component image, version, previous image and health; failed targets with the error.
    Raises:
        InvalidInput: unknown application, target, component or version, before anything changes.
        DeployFailed: a target did not become healthy (each failed target was rolled back; the
            others are deployed); the message lists the failed targets.
    """
    logger = get_run_logger()
    if len(set(targets)) != len(targets):
        raise InvalidInput(f"targets lists a target twice: {targets}")
    application = _load(Application, app, "application")
    registry = _load(ContainerRegistry, registry_block, "container registry")
    store = _load(ObjectStore, records_store, "object store")
    blocks = {t: _load(_TARGET_BLOCKS[target_kind], t, f"{target_kind} target") for t in targets}
    names = components or [c.name for c in application.components]
    unknown = sorted(set(names) - {c.name for c in application.components})
    if unknown:
        raise InvalidInput(f"application {app!r} has no component(s) {unknown}")
    chosen_method = method or application.deploy.method
    if target_kind == "docker" and chosen_method == DeployMethod.blue_green:
        host_networked = [t for t, b in blocks.items() if b.network_mode != "bridge"]
        portless = [n for n in names if not application.component(n).ports]
        if host_networked or portless:
            raise InvalidInput("blue-green on Docker hosts needs bridge networking and a port to switch: "
                               + "; ".join([*(f"target {t} uses network_mode=host" for t in host_networked),
                                            *(f"component {n} has no port" for n in portless)])
                               + "; use method=rolling there")
    releases = [resolve_release(registry, application, name, version, replicas if replicas is not None
                                else application.deploy.replicas, cpu or application.deploy.cpu,
                                memory or application.deploy.memory, chosen_method) for name in names]
    reads = {t: {r.component: running_specs.submit(b, app, r.component) for r in releases}
             for t, b in blocks.items()} if target_kind == "docker" else {}
    plans = [publish_plan.submit(
        releases, target_kind, target,
        {c: _or_error(f.result(raise_on_failure=False)) for c, f in reads.get(target, {}).items()},
        getattr(block, "namespace", "default"), getattr(block, "os", None) == "windows",
        getattr(block, "network_mode", "host")) for target, block in blocks.items()]
    for plan in plans:
        plan.result()
    if approve:
        logger.info("waiting for approval: resume this run in the Prefect UI to deploy, cancel it to stop")
        pause_flow_run(timeout=24 * 3600)

    outcomes: dict[str, list[dict] | BaseException] = {}
    waiting, running = list(targets), {}
    while waiting or running:
        while waiting and len(running) < max_parallel:
            target = waiting.pop(0)
            running[deploy_to_target.submit(app, version, target, target_kind, blocks[target], registry, releases,
                                            store)] = target
        future = next(as_completed(list(running)))
        target = running.pop(future)
        try:
            outcomes[target] = future.result()
        except Exception as exc:  # noqa: BLE001 - one target failing must not stop the others; reported below
            outcomes[target] = exc
            logger.error("deploy to %s failed: %s", target, exc)
    return report_outcomes(app, version, targets, outcomes)


def report_outcomes(app: str, version: str, targets: list[str], outcomes: dict) -> dict:
    """The per-target table artifact; raises when any target failed, listing them."""
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
