"""The release a manual deploy rolls out: each component's image resolved to a registry digest, one
release per run role; the checks against each target before anything changes; and the plan for a
target (what will run, and its diff against what runs now) as an artifact, secrets shown only as
names and a fingerprint."""

from __future__ import annotations

import json

from prefect import task
from prefect.artifacts import create_markdown_artifact

from blocks import Application, ContainerRegistry
from blocks.application import DeployMethod, RoleKind, RuntimeConfig
from opsflow.core.errors import InvalidInput
from tasks.deploy.k8s_manifests import kubernetes_manifests, redacted
from tasks.deploy.plan import (
    ComponentRelease,
    bash_script,
    docker_container_specs,
    docker_proxy_spec,
    powershell_script,
    spec_diff,
)
from tasks.deploy.runtime import (
    RuntimeValues,
    describe,
    docker_problems,
    host_path_problems,
    load_runtime,
    placeholder_env,
)
from tasks.registry.lookup import lookup_image


def resolve_release(registry: ContainerRegistry, app: Application, component: str, version: str,
                    replicas: int | None, cpu: str | None, memory: str | None, method: DeployMethod,
                    roles: list[str] | None = None, env: dict[str, str] | None = None,
                    init: bool | None = None) -> list[ComponentRelease]:
    """The component's image by digest (a tag is looked up in the registry; a digest must exist),
    as one release per run role (``roles``: only those). Run-form values (``replicas``, ``cpu``,
    ``memory``, ``env``, ``init``) win over the role's, which win over the application's defaults.
    A plain function, no task run: the flow calls it in a thread beside the engine reads.

    Raises:
        InvalidInput: the tag or digest is not in the registry.
        RemoteError: the registry refused or did not answer (``lookup_image``).
    """
    comp = app.component(component)
    chosen = [comp.role(r) for r in roles] if roles else comp.run_roles()
    repository = registry.repository(f"{app.name}-{comp.name}")
    digest = lookup_image.fn(registry, repository, version)
    if digest is None:
        raise InvalidInput(f"{repository}:{version} is not in the registry {registry.url}; "
                           "pick a tag or digest the GitOps merge pipeline pushed")
    short = version if not version.startswith("sha256:") else version[7:19]
    health = comp.health_check
    form = RuntimeConfig(env=env or {}, init=init)
    return [ComponentRelease(
        app=app.name, component=comp.name, image=f"{repository}@{digest}", version=short,
        replicas=replicas if replicas is not None else role.replicas if role.replicas is not None
        else app.deploy.replicas,
        cpu=cpu or role.cpu or app.deploy.cpu, memory=memory or role.memory or app.deploy.memory,
        ports=comp.ports if role.kind == RoleKind.service else [],
        health_path=health.path if health and role.kind == RoleKind.service else None,
        health_deadline_s=health.deadline_s if health else 60, probe_timeout_s=health.timeout_s if health else 2,
        drain_s=health.drain_s if health else 2.0, method=method, role=role.name, kind=role.kind,
        runtime=comp.runtime.merged(role.runtime).merged(form), schedule=role.schedule,
        run_deadline_s=role.run_deadline_s, ingress=role.ingress, autoscale=role.autoscale,
        compose_service=comp.compose_service) for role in chosen]


def _field(release: ComponentRelease) -> str:
    return f"components[{release.key}]"


@task(name="check-runtime-secrets", task_run_name="check-runtime-secrets")
def check_runtime_secrets(releases: list[ComponentRelease]) -> dict[str, dict]:
    """Read every Secret block the releases name (a missing or unreadable one, or a malformed env
    file, fails here, naming the field, before any target is touched); returns per release what a
    plan shows: names and a fingerprint, never a value."""
    return {r.key: describe(r.runtime, load_runtime(r.runtime, f"{_field(r)}.runtime")) for r in releases}


def uses_secrets(releases: list[ComponentRelease]) -> bool:
    """Whether any release names a Secret block (else the plan's runtime view needs no task run)."""
    return any(r.runtime.env_files or r.runtime.secret_files for r in releases)


def check_target(releases: list[ComponentRelease], kind: str, target: str, block, info: dict | None) -> list[str]:
    """What ``target`` would refuse, found before anything changes: bind mounts outside its allowed
    roots, CPU/memory the engine refuses or the host does not have (``info``: the engine's
    ``docker info``), a schedule a Docker host cannot run, runtime settings an SSH host's script
    does not carry. Raises InvalidInput listing every problem. Pure (the flow reads the engine first),
    so no task run of its own: every task hop costs a deploy time."""
    problems: list[str] = []
    for rel in releases:
        where = _field(rel)
        if kind in ("docker", "kubernetes"):
            problems += host_path_problems(rel.runtime, block.allowed_host_paths, f"{where}.runtime", target)
        if kind == "docker":
            problems += docker_problems(rel.cpu, rel.memory, info or {}, where, target)
            if rel.kind == RoleKind.batch and rel.schedule:
                problems.append(f"{where}.schedule: a Docker host runs a batch role once per deploy; schedules "
                                "run as Kubernetes CronJobs (remove the schedule or deploy to a Kubernetes target)")
            if rel.runtime.networks and block.network_mode == "host":
                problems.append(f"{where}.runtime.networks: {target} uses host networking; containers there "
                                "cannot join networks")
        if kind == "ssh" and (rel.runtime != RuntimeConfig() or rel.kind == RoleKind.batch):
            problems.append(f"{where}: runtime configuration and batch roles need a Docker host or Kubernetes "
                            f"target; the SSH script for {target} runs the image with its ports and health check")
    if problems:
        raise InvalidInput(f"the deploy to {target} was not started: " + "; ".join(problems))
    return []


def _docker_section(rel: ComponentRelease, network_mode: str, running: list[dict] | str, shown: dict) -> list[str]:
    parts: list[str] = []
    values = RuntimeValues(names=shown.get("env_from_secrets", {}), fingerprint=shown.get("secrets_fingerprint", ""))
    env = placeholder_env(rel.runtime, values)
    blue_green = rel.method == DeployMethod.blue_green
    beside = rel.kind == RoleKind.service and (blue_green or network_mode == "bridge" or not rel.ports)
    planned = docker_container_specs(rel, network_mode, colour="blue" if beside else None, env=env)
    if rel.kind == RoleKind.batch:
        parts.append(f"Batch role: `{rel.base_name}-run` runs once to completion (at most {rel.run_deadline_s:g}s); "
                     "a non-zero exit fails the deploy.")
    elif rel.replicas == 0:
        parts.append(f"**replicas 0: every container of {rel.key} (and its proxy) is removed; nothing of it runs "
                     "afterwards.**")
    elif blue_green:
        parts.append("The new version starts as the colour that is not live (shown as blue), is probed, then the "
                     f"proxy `{rel.base_name}-proxy` (ports {rel.ports}) switches to it and the old colour stops.")
    elif beside and rel.ports:
        parts.append(f"Surge: each new replica starts beside the old ones (shown as blue), is probed inside the "
                     f"network, then the proxy `{rel.base_name}-proxy` (ports {rel.ports}) sends traffic to it and "
                     "an old one is removed: no gap.")
    elif beside:
        parts.append("Surge: the new containers start beside the old ones (no ports to share); the old ones are "
                     "removed once the new ones run.")
    else:
        parts.append(f"**Gap: {network_mode} networking, where two containers cannot hold port(s) {rel.ports}: "
                     "the old container stops before the new one starts, so the port refuses connections until the "
                     "new one answers (or the old one is back after a failure).**")
    if beside and rel.ports:
        planned.append(docker_proxy_spec(rel, "opsflow/bluegreen-proxy"))
    if shown:
        parts += ["Runtime configuration (secrets: names and fingerprint only):", "```json",
                  *json.dumps(shown, indent=2, sort_keys=True).splitlines(), "```"]
    parts += ["```json", *json.dumps(planned, indent=2, default=str).splitlines(), "```"]
    if isinstance(running, str):
        parts.append(f"**{running}**")
    else:
        diff = spec_diff(running, planned, rel.base_name)
        parts += ["Changes against what runs now:", "```diff", diff or "(no running containers)", "```"]
    return parts


@task(name="publish-deploy-plan", task_run_name="publish-deploy-plan-{target}")
def publish_plan(releases: list[ComponentRelease], kind: str, target: str, current: dict[str, list[dict] | str],
                 namespace: str = "default", windows: bool = False, network_mode: str = "host",
                 runtime_shown: dict[str, dict] | None = None, compose_diff: str | None = None,
                 ingress_class: str | None = None) -> str:
    """Render the plan for the target, with a diff against what runs now, as a markdown artifact.

    Secrets appear as their names and a fingerprint (``runtime_shown``), never as values.
    """
    shown_all = runtime_shown or {}
    parts = [f"# Deploy plan: {releases[0].app} → {target} ({kind})", ""]
    if compose_diff is not None:
        parts += ["Compose project: the services below are set to the release and `up -d` runs for them only; "
                  "the others are not restarted. Changes to the compose file:", "```diff",
                  compose_diff or "(no change)", "```"]
    for rel in releases:
        shown = shown_all.get(rel.key, {})
        what = (f"{rel.replicas} \u00d7 " if rel.kind == RoleKind.service else "batch, ") + \
            f"{rel.cpu} CPU / {rel.memory}"
        parts.append(f"## {rel.key}: `{rel.image}` ({rel.version}), {what}, {rel.method.value}")
        if kind == "docker" and compose_diff is None:
            parts += _docker_section(rel, network_mode, current.get(rel.key, []), shown)
        elif kind == "kubernetes":
            import yaml

            values = RuntimeValues(names=shown.get("env_from_secrets", {}),
                                   fingerprint=shown.get("secrets_fingerprint", ""))
            manifests = redacted(kubernetes_manifests(rel, namespace, values=_placeholder_values(rel, values),
                                                      ingress_class=ingress_class), values)
            parts += ["```yaml", yaml.safe_dump_all(manifests, sort_keys=False), "```"]
        elif kind == "ssh":
            script = powershell_script(rel) if windows else bash_script(rel)
            parts += ["```powershell" if windows else "```bash", script, "```"]
        elif shown:
            parts += ["```json", *json.dumps(shown, indent=2, sort_keys=True).splitlines(), "```"]
    markdown = "\n".join(parts) + "\n"
    create_markdown_artifact(markdown=markdown, key=f"deploy-plan-{releases[0].app}-{target}",
                             description=f"Deploy plan for {target}")
    return markdown


def _placeholder_values(rel: ComponentRelease, values: RuntimeValues) -> RuntimeValues:
    """Stand-in secrets with the right names, so a plan's manifests have the real shape (and the
    Secret names say they exist) without any value."""
    from pydantic import SecretStr

    env = {k: SecretStr("-") for keys in values.names.values() for k in keys}
    files = {f.path: (SecretStr("-"), f.mode) for f in rel.runtime.secret_files}
    return RuntimeValues(secret_env=env, files=files, names=values.names, fingerprint=values.fingerprint)
