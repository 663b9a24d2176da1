"""Installing a component's dependencies from its lockfile, through the build server's cache.

Runs before the env files are written (so neither the install nor the cache ever sees them) and with
a scrubbed environment. Two trees may be installed:

* ``install`` (npm, pnpm, yarn, uv, pip): the full tree the build and tests need, in the component
  directory (``node_modules`` or ``.venv``), restored from the cache when the lockfile is unchanged;
* ``runtime_dependencies: npm``: the production tree (no devDependencies) for the artifact, installed in
  ``<workspace>/runtime/<component>/`` from ``package.json`` (its ``scripts`` left out: a project's own
  ``prepare``/``postinstall`` usually builds, which needs the dev tools) and ``package-lock.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from prefect import get_run_logger, task

from blocks.application import Component, DependencyManager, RuntimeDependencies
from opsflow.core.errors import BuildFailed, CommandFailed
from opsflow.core.proc import run
from tasks.build.app import component_dir
from tasks.build.caches import TreeCache, cache_key, machine
from tasks.build.env import build_environment
from tasks.build.packaging import runtime_dir
from tasks.git import Checkout

NPM_CI = ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"]


@dataclass(frozen=True)
class Manager:
    """How a package manager installs from a lockfile, and what of it the cache keeps."""

    commands: tuple[tuple[str, ...], ...]
    tree: str | None  # the installed directory the cache keeps (None: only the tool's download cache)
    lockfiles: tuple[str, ...]  # one must exist
    inputs: tuple[str, ...]  # also decide the tree when present
    runtime: tuple[str, ...]  # the interpreter whose version is part of the key


MANAGERS = {
    DependencyManager.npm: Manager((tuple(NPM_CI),), "node_modules", ("package-lock.json", "npm-shrinkwrap.json"),
                                   ("package.json", ".npmrc"), ("node", "--version")),
    DependencyManager.pnpm: Manager((("pnpm", "install", "--frozen-lockfile", "--prefer-offline"),), "node_modules",
                                    ("pnpm-lock.yaml",), ("package.json", ".npmrc", "pnpm-workspace.yaml"),
                                    ("node", "--version")),
    DependencyManager.yarn: Manager((("yarn", "install", "--frozen-lockfile", "--prefer-offline"),), "node_modules",
                                    ("yarn.lock",), ("package.json", ".yarnrc", ".yarnrc.yml"), ("node", "--version")),
    DependencyManager.uv: Manager((("uv", "venv", "--relocatable", "--quiet", ".venv"), ("uv", "sync", "--frozen")),
                                  ".venv", ("uv.lock",), ("pyproject.toml", ".python-version"),
                                  ("python3", "--version")),
    # A pip venv's scripts name its absolute path, so it is not moved between checkouts: pip keeps its wheels.
    DependencyManager.pip: Manager((("python3", "-m", "venv", ".venv"),
                                    (".venv/bin/python", "-m", "pip", "install", "-q", "-r", "requirements.txt")),
                                   None, ("requirements.txt",), (), ("python3", "--version")),
}


@dataclass(frozen=True)
class Installed:
    """What the install step did for a component."""

    component: str
    manager: str | None = None
    key: str | None = None
    restored: bool = False  # the tree came from the cache
    runtime_key: str | None = None
    runtime_restored: bool = False
    seconds: float = 0.0


@lru_cache(maxsize=8)
def _version(argv: tuple[str, ...]) -> str:
    try:
        return run(list(argv), timeout=30).strip()
    except CommandFailed:
        return "absent"


def tree_key(manager: str, commands: tuple[tuple[str, ...], ...], cwd: Path, lockfile: Path,
             inputs: tuple[str, ...], runtime: tuple[str, ...]) -> str:
    """The cache key of an installed tree: manager, commands, lockfile and inputs' bytes, runtime, machine."""
    parts: list[bytes | str] = [manager, json.dumps(commands), lockfile.name, lockfile.read_bytes(),
                                _version(runtime), machine()]
    for name in inputs:
        path = cwd / name
        parts += [name, path.read_bytes() if path.is_file() else b"\0absent"]
    return cache_key(*parts)


def _lockfile(manager: Manager, cwd: Path, component: Component) -> Path:
    for name in manager.lockfiles:
        if (cwd / name).is_file():
            return cwd / name
    raise BuildFailed(f"component {component.name!r} installs with {component.install}, but there is no "
                      f"{' or '.join(manager.lockfiles)} in {component.path!r}; commit the lockfile")


def _install(argvs, cwd: Path, env: dict[str, str], what: str, logger, timeout: float) -> None:
    for argv in argvs:
        logger.info("%s$ %s", what, " ".join(argv))
        try:
            run(list(argv), cwd=cwd, env=env, isolated=True, timeout=timeout, logger=logger)
        except CommandFailed as exc:
            raise BuildFailed(f"installing the dependencies of {what} failed: {exc}") from exc


def _cached_tree(cache: TreeCache, manager: str, key: str, dest: Path, install, logger) -> bool:
    """Restore ``dest`` from the cache, or run ``install`` and save it; True when restored."""
    started = time.monotonic()
    if cache.restore(manager, key, dest):
        logger.info("restored %s from the %s cache (key %s) in %.1fs", dest.name, manager, key[:12],
                    time.monotonic() - started)
        return True
    install()
    if dest.is_dir() and cache.save(manager, key, dest):
        evicted = cache.evict(keep=frozenset({(manager, key)}))
        logger.info("saved %s to the %s cache (key %s)%s", dest.name, manager, key[:12],
                    f"; evicted {', '.join(evicted)}" if evicted else "")
    return False


@task(name="install-deps", task_run_name="install-deps-{component.name}")
def install_deps(checkout: Checkout, component: Component, cache: TreeCache | None = None,
                 timeout: float = 1800) -> Installed:
    """Install the component's dependencies from its lockfile (and its production tree for the artifact).

    Call it before the env files are written. An unchanged lockfile restores the installed tree from
    the build server's cache instead of installing.

    Raises:
        BuildFailed: no lockfile, or the package manager failed (its redacted output is in the message).
    """
    logger = get_run_logger()
    cache = cache or TreeCache.from_env()
    started = time.monotonic()
    cwd = component_dir(checkout, component)
    env = build_environment(checkout, cache)
    if component.install == DependencyManager.pnpm:
        env["npm_config_store_dir"] = str(cache.tool_dir("pnpm"))
    result = {"component": component.name}
    if component.install:
        manager = MANAGERS[component.install]
        commands = (tuple(component.install_command),) if component.install_command else manager.commands
        lockfile = _lockfile(manager, cwd, component)
        name = str(component.install)
        with cache.using_tools(name):
            if manager.tree is None or (cwd / manager.tree).exists():
                if manager.tree:
                    logger.warning("%s has a committed %s: installing over it, not cached", component.name,
                                   manager.tree)
                _install(commands, cwd, env, component.name, logger, timeout)
                result.update(manager=name)
            else:
                key = tree_key(name, commands, cwd, lockfile, manager.inputs, manager.runtime)
                restored = _cached_tree(cache, name, key, cwd / manager.tree,
                                        lambda: _install(commands, cwd, env, component.name, logger, timeout), logger)
                result.update(manager=name, key=key, restored=restored)
    if component.runtime_dependencies == RuntimeDependencies.npm:
        key, restored = _runtime_npm(checkout, component, cwd, cache, env, logger, timeout)
        result.update(runtime_key=key, runtime_restored=restored)
    return Installed(**result, seconds=round(time.monotonic() - started, 2))


def _runtime_npm(checkout: Checkout, component: Component, cwd: Path, cache: TreeCache, env: dict[str, str],
                 logger, timeout: float) -> tuple[str, bool]:
    manager = MANAGERS[DependencyManager.npm]
    lockfile = _lockfile(manager, cwd, component)
    package = json.loads((cwd / "package.json").read_text()) if (cwd / "package.json").is_file() else None
    if package is None:
        raise BuildFailed(f"component {component.name!r}: runtime_dependencies npm needs a package.json")
    package.pop("scripts", None)
    staging = runtime_dir(checkout, component)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / "package.json").write_text(json.dumps(package, indent=2))
    shutil.copy2(lockfile, staging / lockfile.name)
    argv = (*NPM_CI, "--omit=dev")
    key = tree_key("npm-runtime", (argv,), staging, staging / lockfile.name, ("package.json",), manager.runtime)
    with cache.using_tools("npm"):
        restored = _cached_tree(cache, "npm-runtime", key, staging / "node_modules",
                                lambda: _install([argv], staging, env, f"{component.name} (runtime)", logger, timeout),
                                logger)
    if not (staging / "node_modules").is_dir():  # a package without dependencies
        (staging / "node_modules").mkdir()
    return key, restored
