"""The release a manual deploy rolls out: each component's image resolved to a registry digest,
and the plan for a target (what will run, and its diff against what runs now) as an artifact."""

from __future__ import annotations

import json

from prefect import task
from prefect.artifacts import create_markdown_artifact

from blocks import Application, ContainerRegistry
from blocks.application import DeployMethod
from opsflow.core.errors import InvalidInput
from tasks.deploy.plan import (
    ComponentRelease,
    bash_script,
    docker_container_specs,
    docker_proxy_spec,
    kubernetes_manifests,
    powershell_script,
    spec_diff,
)
from tasks.registry.lookup import lookup_image


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
        parts.append(f"## {rel.component}: `{rel.image}` ({rel.version}), {rel.replicas} \u00d7 {rel.cpu} CPU / "
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
