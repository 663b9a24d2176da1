"""Running an application component's declared build/transpile commands, in a scrubbed environment."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task

from blocks.application import Component
from opsflow.core.errors import BuildFailed, CommandFailed
from opsflow.core.proc import run
from tasks.build.caches import TreeCache
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
    duration = time.monotonic() - started
    logger.info("built %s in %.1fs -> %s", component.name, duration, output_path(component))
    return BuildResult(component=component.name, output_dir=output, component_dir=cwd, duration_s=duration,
                       layout=layout)
