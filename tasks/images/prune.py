"""Docker host pruning: dangling images left by builds, stopped containers past an age, build cache over a budget.

Never touches a running container or an image one uses: candidates are dangling images no
container references and containers that are not running; the engine refuses the rest anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import get_run_logger, task

from blocks import DockerHostTarget
from opsflow.core.errors import RemoteError


@dataclass(frozen=True)
class PruneRow:
    host: str
    kind: str  # image | container | build-cache
    id: str
    name: str
    age_days: float | None
    size: int
    action: str  # remove | keep
    reason: str


def _age_days(stamp: str | None, now: datetime) -> float | None:
    if not stamp or stamp.startswith("0001-"):
        return None
    return (now - datetime.fromisoformat(stamp)).total_seconds() / 86400


@task(name="plan-docker-prune", task_run_name="plan-docker-prune-{engine.name}", retries=2, retry_delay_seconds=5)
def plan_docker_prune(engine: DockerHostTarget, stopped_older_than_days: float = 7,
                      build_cache_budget_bytes: int = 10 << 30) -> list[PruneRow]:
    """What pruning ``engine`` would remove, and what it keeps and why."""
    import docker.errors

    now = datetime.now(UTC)
    client = engine.get_client()
    rows: list[PruneRow] = []
    try:
        containers = client.containers.list(all=True)
        used_images = {c.attrs.get("Image") for c in containers}
        for c in containers:
            state = c.attrs.get("State") or {}
            if state.get("Running") or state.get("Restarting") or state.get("Paused"):
                continue
            age = _age_days(state.get("FinishedAt"), now) or _age_days(c.attrs.get("Created"), now)
            old = age is not None and age > stopped_older_than_days
            rows.append(PruneRow(engine.name, "container", c.id[:12], c.name, age, 0, "remove" if old else "keep",
                                 f"stopped {age:.1f} days" + ("" if old else f", not over {stopped_older_than_days:g}")
                                 if age is not None else "stopped, age unknown"))
        for image in client.images.list(filters={"dangling": True}):
            if image.id in used_images:
                rows.append(PruneRow(engine.name, "image", image.short_id, "<none>", None, image.attrs.get("Size", 0),
                                     "keep", "a container uses it"))
                continue
            rows.append(PruneRow(engine.name, "image", image.short_id, "<none>",
                                 _age_days(image.attrs.get("Created"), now), image.attrs.get("Size", 0), "remove",
                                 "dangling (no tag) and no container uses it"))
        cache = sum(entry.get("Size", 0) for entry in client.df().get("BuildCache") or [])
        over = cache - build_cache_budget_bytes
        rows.append(PruneRow(engine.name, "build-cache", "-", "build cache", None, cache,
                             "remove" if over > 0 else "keep",
                             f"{cache:,} bytes, budget {build_cache_budget_bytes:,}" + (" (trimmed to the budget)"
                                                                                       if over > 0 else "")))
    except docker.errors.APIError as exc:
        raise RemoteError(f"Docker host {engine.name}: {exc.explanation or exc}") from exc
    finally:
        client.close()
    return rows


@task(name="apply-docker-prune", task_run_name="apply-docker-prune-{engine.name}")
def apply_docker_prune(engine: DockerHostTarget, rows: list[PruneRow], build_cache_budget_bytes: int = 10 << 30) -> int:
    """Remove what the plan marks ``remove``; returns the bytes the engine reports freed."""
    import docker.errors

    logger = get_run_logger()
    client = engine.get_client()
    freed = 0
    try:
        for row in rows:
            if row.action != "remove" or row.host != engine.name:
                continue
            try:
                if row.kind == "container":
                    client.containers.get(row.id).remove(v=False)
                elif row.kind == "image":
                    client.images.remove(row.id, noprune=False)  # no force: an image in use is refused
                    freed += row.size
                elif row.kind == "build-cache":
                    freed += client.images.prune_builds(keep_storage=build_cache_budget_bytes).get("SpaceReclaimed", 0)
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:
                logger.warning("%s %s %s not removed: %s", engine.name, row.kind, row.id, exc.explanation or exc)
    finally:
        client.close()
    logger.info("%s: pruned, %d bytes freed", engine.name, freed)
    return freed
@task(name="prune-build-images", task_run_name="prune-build-images-{engine.name}")
def prune_build_images(engine: DockerHostTarget, dry_run: bool = False) -> dict:
    """Remove dangling images left by builds on the engine (never an image a container uses)."""
    logger = get_run_logger()
    client = engine.get_client()
    try:
        if dry_run:
            dangling = client.images.list(filters={"dangling": True})
            logger.info("dry run: would remove %d dangling image(s)", len(dangling))
            return {"would_remove": [i.id for i in dangling], "space_reclaimed": 0}
        result = client.images.prune(filters={"dangling": True})
    finally:
        client.close()
    removed = [d.get("Deleted") or d.get("Untagged") for d in (result.get("ImagesDeleted") or [])]
    logger.info("pruned %d dangling image layer(s), %d bytes", len(removed), result.get("SpaceReclaimed") or 0)
    return {"removed": removed, "space_reclaimed": result.get("SpaceReclaimed") or 0}
