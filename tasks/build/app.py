"""Running an application component's declared build/transpile commands, in a scrubbed environment."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task

from blocks.application import Component
from opsflow.core.errors import BuildFailed, CommandFailed
from opsflow.core.proc import run
from opsflow.core.redact import registered
from tasks.build.caches import TreeCache, cache_key, find_secret
from tasks.build.env import build_environment
from tasks.build.packaging import artifact_layout, runtime_dir
from tasks.git import Checkout


@dataclass(frozen=True)
class BuildResult:
    """Where a component's build output is, and how long the build took."""

    component: str
    output_dir: Path
    component_dir: Path
    duration_s: float
    layout: list[tuple[Path, str]] | None = None  # what the artifact holds (tasks.build.packaging); None: output_dir


def component_dir(checkout: Checkout, component: Component) -> Path:
    root = checkout.path.resolve()
    path = (root / component.path).resolve()
    if path != root and root not in path.parents:
        raise BuildFailed(f"component {component.name!r} path {component.path!r} escapes the checkout")
    if not path.is_dir():
        raise BuildFailed(f"component {component.name!r}: directory {component.path!r} is not in the repository")
    return path


def _cache_prefix(checkout: Checkout, component: Component, rel: str) -> str:
    return cache_key("build-cache", checkout.repository, component.name, rel)[:24] + "-"


def restore_build_caches(checkout: Checkout, component: Component, cwd: Path, cache: TreeCache | None, logger) -> None:
    """Put the last successful build's tool caches (``component.build_cache_dirs``) in place, if any."""
    for rel in component.build_cache_dirs if cache else ():
        dest = (cwd / rel).resolve()
        key = cache.latest("build", _cache_prefix(checkout, component, rel))
        if key and not dest.exists() and cache.restore("build", key, dest):
            logger.info("restored the build cache %s of %s", rel, component.name)


def save_build_caches(checkout: Checkout, component: Component, cwd: Path, cache: TreeCache | None,
                      secrets: list[str], logger) -> None:
    """Keep the build's tool caches for the next build of this component, unless one holds a secret value."""
    for rel in component.build_cache_dirs if cache else ():
        source = (cwd / rel).resolve()
        if not source.is_dir():
            continue
        leak = find_secret(source, secrets)
        if leak is not None:
            logger.warning("the build cache %s of %s is not kept: %s holds a secret value", rel, component.name,
                           leak.relative_to(cwd))
            continue
        prefix = _cache_prefix(checkout, component, rel)
        key = f"{prefix}{time.time_ns()}"
        if cache.save("build", key, source):
            cache.keep_newest("build", prefix, key)
            cache.evict(keep=frozenset({("build", key)}))
            logger.info("saved the build cache %s of %s", rel, component.name)


def output_path(component: Component) -> str:
    """Where the build leaves what is packed, relative to the component directory."""
    return ".next/standalone" if component.packaging == "nextjs-standalone" else component.build_output


@task(name="build-app", task_run_name="build-{component.name}")
def build_app(checkout: Checkout, component: Component, redact_values: list[str] | None = None,
              timeout: float = 1800, cache: TreeCache | None = None) -> BuildResult:
    """Run the component's build commands in its directory; return where the output is.

    Each command is an argv list (no shell) run with a scrubbed environment
    (:func:`tasks.build.env.build_environment`: no variable of the worker's reaches it); output is
    streamed to the run log with ``redact_values`` (the env files' secret values) masked.

    Raises:
        BuildFailed: a command exited non-zero or timed out, or the output directory is missing.
    """
    logger = get_run_logger()
    cwd = component_dir(checkout, component)
    started = time.monotonic()
    restore_build_caches(checkout, component, cwd, cache, logger)
    for argv in component.build_commands:
        logger.info("%s$ %s", component.name, " ".join(argv))
        try:
            run(argv, cwd=cwd, secrets=redact_values or [], timeout=timeout, logger=logger,
                env=build_environment(checkout, cache), isolated=True)
        except CommandFailed as exc:
            raise BuildFailed(f"build of {component.name!r} failed: {exc}") from exc
    output = (cwd / output_path(component)).resolve()
    if not output.is_dir() or not any(output.iterdir()):
        raise BuildFailed(f"build of {component.name!r} finished but {output_path(component)!r} is missing or empty"
                          + ("; set output: 'standalone' in next.config" if component.packaging == "nextjs-standalone"
                             else ""))
    layout = artifact_layout(component, cwd, output, runtime_dir(checkout, component) / "node_modules")
    save_build_caches(checkout, component, cwd, cache, [*(redact_values or []), *registered()], logger)
    duration = time.monotonic() - started
    logger.info("built %s in %.1fs -> %s", component.name, duration, output_path(component))
    return BuildResult(component=component.name, output_dir=output, component_dir=cwd, duration_s=duration,
                       layout=layout)
