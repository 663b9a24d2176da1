"""Deploys into a docker-compose project on an edge node (the file side: ``tasks/deploy/compose.py``).

Rolling: the release's services are written into the compose file and ``up -d --no-deps`` runs for
them only (the others are not restarted), then each is health-gated on its published port; any
failure writes the file back byte for byte, brings those services up as they were and says whether
they answer. Blue-green (the service publishing no ports itself): one more container of the service
with ``up --scale N+1 --no-recreate``, probed in the project's network from opsflow's proxy (which
publishes the ports), the proxy switched, the old container removed after a drain: no gap.
"""

from __future__ import annotations

import time

from prefect import get_run_logger, task

from blocks import ContainerRegistry, DockerHostTarget
from blocks.application import DeployMethod, RoleKind
from opsflow.core.errors import DeployFailed
from opsflow.core.redact import redact
from tasks.deploy.bluegreen import ensure_proxy_image, read_upstream, wait_drained, write_upstream
from tasks.deploy.compose import (
    ComposeChange,
    compose_command,
    plan_compose,
    project_label,
    published_url,
    restore_compose,
    secrets_dir,
    service_containers,
    write_compose,
)
from tasks.deploy.docker_host import (
    RolloutResult,
    engine_error,
    engine_session,
    find_container,
    pull_if_missing,
    run_batch,
    wait_healthy,
)
from tasks.deploy.plan import OPSFLOW_LABEL, ComponentRelease
from tasks.deploy.runtime import load_runtime
from tasks.deploy.surge import probe_new, start_proxy


def compose_diff(engine: DockerHostTarget, releases: list[ComponentRelease]) -> str:
    """The compose-file diff a deploy would make on ``engine`` (the plan artifact shows it): secret
    files appear as their paths, named by fingerprint, never as content. Raises InvalidInput
    before anything changes when the file does not parse or lacks a service. A plain function (the
    flow calls it in a thread); its result is part of the plan task's artifact."""
    values = {r.key: load_runtime(r.runtime, f"components[{r.key}].runtime") for r in releases}
    return plan_compose(engine, releases, values).diff


@task(name="rollout-compose", task_run_name="rollout-compose-{engine.name}")
def rollout_compose(engine: DockerHostTarget, registry: ContainerRegistry,
                    releases: list[ComponentRelease]) -> list[RolloutResult]:
    """Deploy ``releases`` into the engine's compose project: write the services' new settings,
    ``up -d --no-deps`` them (blue-green: beside the old containers, behind the proxy), health-gate,
    and on any failure restore the file and bring the services back as they were.

    Raises:
        DeployFailed: a service failed (pull, up, exit, health); the compose file is back as it was
            and the message says whether the previous version answers.
    """
    logger = get_run_logger()
    values = {r.key: load_runtime(r.runtime, f"components[{r.key}].runtime") for r in releases}
    secrets = [s for v in values.values() for s in v.secrets()]
    change = plan_compose(engine, releases, values)
    services = [r for r in releases if r.kind == RoleKind.service]
    results: dict[str, RolloutResult] = {}
    with engine_session(engine) as client:
        for rel in releases:
            pull_if_missing(client, registry, rel.image)
        before = {r.key: service_containers(client, engine, r.service_name) for r in services}
        previous = {k: (c[0].labels.get(f"{OPSFLOW_LABEL}.image") or c[0].attrs["Config"]["Image"]) if c else None
                    for k, c in before.items()}
        blue_green = [r for r in services if r.method == DeployMethod.blue_green and r.ports]
        rolling = [r for r in services if r not in blue_green]
        write_compose(change)
        try:
            if rolling:
                compose_command(engine, "up", "-d", "--no-deps", *[r.service_name for r in rolling], logger=logger,
                         secrets=secrets)
                for rel in rolling:
                    results[rel.key] = _gate(client, engine, rel, previous[rel.key])
            for rel in blue_green:
                results[rel.key] = _beside(client, engine, rel, before[rel.key], previous[rel.key], secrets)
        except BaseException as exc:  # noqa: BLE001 - any failure (an interrupt too) restores, then raises DeployFailed
            why = redact(str(exc) if isinstance(exc, DeployFailed) else engine_error(exc), secrets)
            back = _restore(client, engine, change, rolling, before, logger, secrets)
            raise DeployFailed(f"compose project {engine.compose_project} on {engine.name}: {why}; the compose "
                               f"file is back as it was{back}") from None
        _forget_old_secrets(engine, change)
        for rel in releases:
            if rel.kind == RoleKind.batch:
                results[rel.key] = run_batch(client, engine, rel, values[rel.key])
    return [results[r.key] for r in releases]


def _gate(client, engine: DockerHostTarget, rel: ComponentRelease, previous: str | None) -> RolloutResult:
    """Health of a recreated service: each of its containers runs the release and answers."""
    containers = [c for c in service_containers(client, engine, rel.service_name, running=False)
                  if c.labels.get(f"{OPSFLOW_LABEL}.image") == rel.image]
    if not containers:
        raise DeployFailed(f"service {rel.service_name} has no container of {rel.version} after `up`")
    seen = ""
    for container in containers:
        healthy, seen = wait_healthy(published_url(engine, container, rel), rel.health_deadline_s,
                                     rel.probe_timeout_s, container=container)
        if not healthy:
            raise DeployFailed(f"{rel.service_name} {rel.version} was not healthy within {rel.health_deadline_s:g}s "
                               f"({seen})")
    return RolloutResult(rel.key, rel.version, previous, True, False, f"healthy ({seen})",
                         [c.name for c in containers], replicas=len(containers))


def _ensure_proxy(client, engine: DockerHostTarget, rel: ComponentRelease):
    """opsflow's proxy for a compose service: on the project's default network, publishing the ports."""
    proxy = find_container(client, f"{rel.base_name}-proxy")
    if proxy is not None:
        if proxy.status != "running":
            proxy.start()
        return proxy
    return start_proxy(client, rel, ensure_proxy_image(engine), f"{project_label(engine.compose_project)}_default")


def _beside(client, engine: DockerHostTarget, rel: ComponentRelease, live: list, previous: str | None,
            secrets: list[str]) -> RolloutResult:
    """Blue-green on compose: one more container of the service (the new image) beside the live ones,
    probed in the network, then the proxy switches to it and the old ones go after a drain."""
    logger = get_run_logger()
    live_ids = {c.id for c in live}
    compose_command(engine, "up", "-d", "--no-deps", "--no-recreate", "--scale", f"{rel.service_name}={len(live) + 1}",
             rel.service_name, logger=logger, secrets=secrets)
    proxy = _ensure_proxy(client, engine, rel)
    new = [c for c in service_containers(client, engine, rel.service_name, running=False) if c.id not in live_ids]
    moved = False
    try:
        if len(new) != 1 or new[0].labels.get(f"{OPSFLOW_LABEL}.image") != rel.image:
            raise DeployFailed(f"`up --scale` did not start one container of {rel.version} for {rel.service_name}")
        healthy, seen = probe_new(proxy, new[0], rel, time.monotonic() + rel.health_deadline_s, engine.public_host)
        if not healthy:
            raise DeployFailed(f"{rel.service_name} {rel.version} was not healthy within {rel.health_deadline_s:g}s "
                               f"({seen}); the live containers kept serving")
        old_upstream = read_upstream(proxy)
        write_upstream(proxy, [new[0].name])
        moved = True
        public = f"http://{engine.public_host}:{rel.ports[0]}{rel.health_path or '/'}"
        healthy, seen = wait_healthy(public, 15, rel.probe_timeout_s)
        if not healthy:
            raise DeployFailed(f"{public} did not answer through the proxy after the switch ({seen})")
    except BaseException:
        if moved:
            write_upstream(proxy, old_upstream or [c.name for c in live])
        for container in new:
            container.remove(force=True)
        raise
    if live:
        wait_drained(proxy, [new[0].name], [c.name for c in live], rel.drain_s)
    for old in live:
        old.remove(force=True)
    return RolloutResult(rel.key, rel.version, previous, True, False, f"healthy ({seen}), switched with no gap",
                         [new[0].name], replicas=1)


def _restore(client, engine: DockerHostTarget, change: ComposeChange, rolling: list[ComponentRelease],
             before: dict[str, list], logger, secrets: list[str]) -> str:
    """Put the compose file back and the rolling services' previous containers up; say whether they answer."""
    restore_compose(change)
    if not rolling:
        return "; the live containers were never touched"
    existed = [r for r in rolling if before[r.key]]
    for rel in rolling:
        if not before[rel.key]:
            for container in service_containers(client, engine, rel.service_name, running=False):
                container.remove(force=True)
    if not existed:
        return "; nothing ran before"
    try:
        compose_command(engine, "up", "-d", "--no-deps", *[r.service_name for r in existed], logger=logger,
                 secrets=secrets)
    except DeployFailed as exc:
        return f"; bringing the previous services up failed too: {exc}"
    said = []
    for rel in existed:
        containers = service_containers(client, engine, rel.service_name)
        healthy, seen = (wait_healthy(published_url(engine, containers[0], rel), rel.health_deadline_s,
                                      rel.probe_timeout_s, container=containers[0])
                         if containers else (False, "no container"))
        said.append(f"{rel.service_name} {'answers again' if healthy else 'does not answer'} ({seen})")
    return "; previous services up: " + ", ".join(said)


def _forget_old_secrets(engine: DockerHostTarget, change: ComposeChange) -> None:
    """Remove secret files neither the new file nor the one before it names (the previous version's
    stay, for a rollback)."""
    root = secrets_dir(engine)
    if not root.exists():
        return
    named = (change.before or "") + change.after
    for path in root.rglob("*"):
        if path.is_file() and str(path) not in named:
            path.unlink(missing_ok=True)
