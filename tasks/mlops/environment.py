"""The ML repository's own Python environment: a venv uv builds from what the repository declares, cached on the
build server by the hash of those files (``tasks/mlops/envcache.py``), and the scrubbed environment its experiment
runs with.

What the venv is built from, declared in ``opsflow-ml.yaml`` (``environment:``) or found in this order:

* ``uv.lock`` with ``pyproject.toml``: ``uv sync --frozen --no-install-project`` (the locked versions; the project's
  own code runs from the checkout);
* ``requirements*.txt`` at the top: ``uv pip install -r`` each;
* ``pyproject.toml`` with ``[project] dependencies``: ``uv pip install -r pyproject.toml``;
* nothing: the experiment runs with the worker's Python (opsflow's own environment), as before.

Packages come from uv's cache when it has them all (``--offline``: a warm build takes well under a second and needs
no index), else from the package index. The venv is built with the worker's interpreter unless ``python:`` asks for
another one. The key covers the files above (their content), the interpreter and this module's layout version, so a
changed lock builds a new venv and an unchanged one reuses it; a requirements file pulled in by ``-r`` from another
file counts only when it is itself a top-level ``requirements*.txt``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prefect import get_run_logger, task

from opsflow.core.errors import CommandFailed, ExperimentFailed, InvalidInput, MlopsError
from opsflow.core.proc import run
from tasks.mlops.config import EnvironmentDecl
from tasks.mlops.envcache import DirCache

KEY_VERSION = "1"
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
#: Variables uv itself needs from the worker's environment (its settings, index credentials, proxies, CA bundles).
_UV_PASSTHROUGH = re.compile(r"^(UV_.*|SSL_CERT_(FILE|DIR)|REQUESTS_CA_BUNDLE|(HTTPS?|NO|ALL)_PROXY"
                             r"|(https?|no|all)_proxy|XDG_(CACHE|CONFIG|DATA)_HOME)$")
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
BUILD_TIMEOUT_S = 1800


@dataclass
class EnvSpec:
    """What a repository's environment is built from."""

    kind: str  # "uv-lock", "requirements", "pyproject" or "none"
    files: list[str] = field(default_factory=list)  # relative to the checkout; their content is the key
    project: str = "."  # the directory of pyproject.toml / uv.lock
    python: str | None = None  # the interpreter request (default: the worker's)


@dataclass
class ExperimentEnv:
    """A ready environment: where its ``python`` is, what it holds, whether this run built it."""

    spec: EnvSpec
    key: str | None  # None: the worker's own Python
    bindir: str
    python_version: str
    packages: dict[str, str]  # distribution name (normalised) -> version
    declared: list[str]  # the requirement names the repository declares (normalised)
    built: bool = False
    source: str = ""  # "uv cache" or "package index" when built

    @property
    def venv(self) -> str | None:
        return str(Path(self.bindir).parent) if self.key else None

    @property
    def cache_dir(self) -> str | None:
        """A cache the runs of this environment share (matplotlib's font list, DVC's site cache); in the entry,
        so it goes when the environment is evicted."""
        return str(Path(self.bindir).parent / "opsflow-xdg-cache") if self.key else None


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def find_environment(workdir: Path, declared: EnvironmentDecl | str | None) -> EnvSpec:
    """What the checkout's environment is built from: the declaration, else the first of uv.lock,
    requirements*.txt, pyproject.toml dependencies (pure but for reading the checkout).

    Raises:
        InvalidInput: a declared file does not exist in the checkout.
    """
    if declared == "none":
        return EnvSpec("none")
    decl = declared if isinstance(declared, EnvironmentDecl) else EnvironmentDecl()
    python = decl.python or _python_version_file(workdir)
    if decl.requirements:
        missing = [f for f in decl.requirements if not (workdir / f).is_file()]
        if missing:
            raise InvalidInput(f"opsflow-ml.yaml: environment.requirements names {missing}, not in the repository")
        return EnvSpec("requirements", list(decl.requirements), python=python)
    project = decl.project or "."
    root = workdir / project
    if decl.project is not None and not (root / "pyproject.toml").is_file():
        raise InvalidInput(f"opsflow-ml.yaml: environment.project {project!r} has no pyproject.toml")
    if (root / "uv.lock").is_file() and (root / "pyproject.toml").is_file():
        return EnvSpec("uv-lock", [_rel(root / "pyproject.toml", workdir), _rel(root / "uv.lock", workdir)],
                       project, python)
    if decl.project is None:
        found = sorted(p.name for p in workdir.glob("requirements*.txt") if p.is_file())
        if found:
            return EnvSpec("requirements", found, python=python)
    if (root / "pyproject.toml").is_file() and _project_dependencies(root / "pyproject.toml") is not None:
        return EnvSpec("pyproject", [_rel(root / "pyproject.toml", workdir)], project, python)
    return EnvSpec("none")


def _rel(path: Path, workdir: Path) -> str:
    return path.relative_to(workdir).as_posix()


def _python_version_file(workdir: Path) -> str | None:
    path = workdir / ".python-version"
    if path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        return lines[0] if lines else None
    return None


def _project_dependencies(pyproject: Path) -> list[str] | None:
    try:
        data = tomllib.loads(pyproject.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        raise InvalidInput(f"{pyproject.name} is not valid TOML: fix it") from None
    deps = data.get("project", {}).get("dependencies")
    return list(deps) if isinstance(deps, list) else None


def interpreter_id() -> str:
    """The worker's interpreter (the default base of every venv), as part of the cache key."""
    return f"{platform.python_implementation()}-{platform.python_version()}-{platform.machine()}-{sys.executable}"


def env_key(workdir: Path, spec: EnvSpec) -> str:
    """The cache key: the declaration files' content, the interpreter request, the layout version (pure)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([KEY_VERSION, spec.kind, spec.project, spec.python or interpreter_id()]).encode())
    for rel in sorted(spec.files):
        digest.update(rel.encode() + b"\0" + hashlib.sha256((workdir / rel).read_bytes()).digest())
    return f"{spec.kind}-{digest.hexdigest()[:32]}"


def declared_names(workdir: Path, spec: EnvSpec) -> list[str]:
    """The distribution names the repository asks for (requirement lines; the project's dependencies)."""
    from packaging.requirements import InvalidRequirement, Requirement

    lines: list[str] = []
    if spec.kind == "requirements":
        for rel in spec.files:
            lines += [line.split(" #")[0].strip() for line in (workdir / rel).read_text().splitlines()]
    elif spec.kind in ("uv-lock", "pyproject"):
        lines = _project_dependencies(workdir / spec.project / "pyproject.toml") or []
    names = []
    for line in lines:
        if not line or line.startswith(("#", "-")):
            continue
        try:
            names.append(normalise(Requirement(line).name))
        except InvalidRequirement:
            continue  # a URL or path line: nothing to pin it by
    return sorted(set(names))


def find_uv() -> str:
    """The ``uv`` executable: on PATH, else where its installer puts it (as the Makefile looks for it).

    Raises:
        MlopsError: uv is not installed.
    """
    for candidate in (shutil.which("uv"), Path.home() / ".local" / "bin" / "uv", Path.home() / ".cargo" / "bin" / "uv"):
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return str(candidate)
    try:
        from uv import find_uv_bin  # the PyPI package, when installed

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        pass
    raise MlopsError("uv is not installed on this worker: install it (`make setup`, or "
                     "`python3 -m pip install --user uv`) so the ML repository's environment can be built")


def cache_root() -> Path:
    """Where opsflow's build-server caches live: ``$OPSFLOW_CACHE_DIR``, else ``opsflow`` in the user's cache
    (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    if os.environ.get("OPSFLOW_CACHE_DIR"):
        return Path(os.environ["OPSFLOW_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "opsflow"


def env_cache() -> DirCache:
    """The cache of ML environments: ``<cache root>/ml-envs``, at most ``$OPSFLOW_ML_ENVS_MAX`` (8) venvs and
    ``$OPSFLOW_ML_ENVS_MAX_GB`` (20) GB of files they own."""
    try:
        count = int(os.environ.get("OPSFLOW_ML_ENVS_MAX", "8"))
        gigabytes = float(os.environ.get("OPSFLOW_ML_ENVS_MAX_GB", "20"))
    except ValueError:
        raise InvalidInput("OPSFLOW_ML_ENVS_MAX must be an integer and OPSFLOW_ML_ENVS_MAX_GB a number") from None
    return DirCache(cache_root() / "ml-envs", max(1, count), int(gigabytes * 1024**3), wait_s=BUILD_TIMEOUT_S)


def uv_environment() -> dict[str, str]:
    """What uv gets from the worker's environment: PATH, HOME and LANG, its own settings, proxies, CA bundles."""
    env = {"PATH": os.pathsep.join(SYSTEM_PATH), "HOME": str(Path.home()), "LANG": "C.UTF-8"}
    env.update({k: v for k, v in os.environ.items() if _UV_PASSTHROUGH.match(k)})
    return env


def _installed(uv: str, python: str) -> dict[str, str]:
    out = run([uv, "pip", "freeze", "--python", python], env=uv_environment(), isolated=True, timeout=120)
    pins = (line.split("==", 1) for line in out.splitlines() if "==" in line and not line.startswith("#"))
    return {normalise(name): version.strip() for name, version in pins}


def _pyvenv_version(venv: Path) -> str:
    for line in (venv / "pyvenv.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version_info", "version"):
            return value.strip()
    return ""


def _install_argv(uv: str, spec: EnvSpec, venv: Path) -> list[str]:
    python = str(venv / "bin" / "python")
    if spec.kind == "uv-lock":
        return [uv, "sync", "--frozen", "--no-install-project", "--python", python]
    if spec.kind == "pyproject":
        return [uv, "pip", "install", "--python", python, "-r", "pyproject.toml"]
    return [uv, "pip", "install", "--python", python, *(a for f in spec.files for a in ("-r", f))]


def build_environment(workdir: Path, spec: EnvSpec, venv: Path, logger=None) -> dict:
    """Build the venv of ``spec`` into the empty directory ``venv`` with uv; the facts the cache records.

    Packages come from uv's cache when it holds all of them (``--offline``), else from the index.

    Raises:
        ExperimentFailed: uv could not build it (the last lines of its output say why).
    """
    uv = find_uv()
    env = uv_environment()
    if spec.kind == "uv-lock":
        env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    cwd = workdir / spec.project
    say = logger.info if logger else (lambda *a: None)
    try:
        run([uv, "venv", str(venv), "--python", spec.python or sys.executable, "--no-project", "--allow-existing",
             "--quiet"], cwd=cwd, env=env, isolated=True, timeout=300, logger=logger)
        argv = _install_argv(uv, spec, venv)
        try:
            run([*argv, "--offline"], cwd=cwd, env=env, isolated=True, timeout=BUILD_TIMEOUT_S)
            source = "uv cache"
        except CommandFailed:
            say("environment %s: not every package is in uv's cache; resolving from the package index", spec.kind)
            run(argv, cwd=cwd, env=env, isolated=True, timeout=BUILD_TIMEOUT_S, logger=logger)
            source = "package index"
        packages = _installed(uv, str(venv / "bin" / "python"))
    except CommandFailed as exc:
        lines = [line for line in exc.output_tail.splitlines() if line.strip()][-20:]
        raise ExperimentFailed(f"the experiment's environment could not be built from {', '.join(spec.files)} "
                               f"(`{' '.join(exc.argv[1:3])}` {_exit_text(exc.returncode)}): "
                               f"{lines[-1] if lines else 'no output'}; fix the file in the branch and push again",
                               lines) from None
    return {"kind": spec.kind, "files": spec.files, "python_version": _pyvenv_version(venv), "packages": packages,
            "source": source}


def _exit_text(returncode: int | None) -> str:
    return "timed out" if returncode is None else f"exited with {returncode}"


def _own_environment(spec: EnvSpec, declared: list[str]) -> ExperimentEnv:
    packages = {normalise(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
                if d.metadata["Name"]}
    return ExperimentEnv(spec, None, str(Path(sys.executable).parent), platform.python_version(), packages, declared)


@contextmanager
def hold_environment(workdir: Path, spec: EnvSpec, logger=None) -> Iterator[ExperimentEnv]:
    """The checkout's environment, built when the cache lacks it, held (never evicted) for the ``with`` block."""
    declared = declared_names(workdir, spec)
    if spec.kind == "none":
        yield _own_environment(spec, declared)
        return
    key = env_key(workdir, spec)
    with env_cache().entry(key, lambda venv: build_environment(workdir, spec, venv, logger)) as entry:
        info = entry.info
        yield ExperimentEnv(spec, key, str(entry.path / "bin"), info.get("python_version", ""),
                            info.get("packages", {}), declared, entry.built, info.get("source", "uv cache"))


@task(name="prepare-environment", task_run_name="prepare-environment")
def prepare_environment(workdir: Path, declared: EnvironmentDecl | str | None) -> ExperimentEnv:
    """The repository's own environment, from the cache or built now (see the module docstring).

    Args:
        workdir: the checkout.
        declared: ``environment`` of opsflow-ml.yaml (``None``: found from the repository's files).
    Returns:
        Where its ``python`` is, its packages, and whether it was built by this run.
    Raises:
        ExperimentFailed: uv could not build it (with the last lines of its output).
        InvalidInput: a declared file is missing.
    """
    logger = get_run_logger()
    spec = find_environment(workdir, declared)
    started = time.monotonic()
    with hold_environment(workdir, spec, logger) as env:
        pass
    if env.key is None:
        logger.warning("the repository declares no environment (no uv.lock, requirements*.txt or pyproject.toml "
                       "dependencies): the experiment runs with the worker's Python")
    else:
        logger.info("environment %s from %s: %s in %.1fs (%d packages, Python %s)", env.key,
                    ", ".join(spec.files), f"built from the {env.source}" if env.built else "cached",
                    time.monotonic() - started, len(env.packages), env.python_version)
    return env


def experiment_environment(env: ExperimentEnv, home: Path, declared: dict[str, str]) -> dict[str, str]:
    """The whole environment the experiment sees (pure): the venv first on PATH, its own HOME and TMPDIR, a UTF-8
    locale, proxies, and what opsflow-ml.yaml declares. Nothing else of the worker's (no Prefect API URL or key, no
    stack settings, no cloud credentials)."""
    out = {"PATH": os.pathsep.join([env.bindir, *SYSTEM_PATH]), "HOME": str(home), "TMPDIR": str(home / "tmp"),
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1", "DVC_NO_ANALYTICS": "1",
           "MPLBACKEND": "Agg", "XDG_CACHE_HOME": env.cache_dir or str(home / ".cache")}
    if env.venv:
        out["VIRTUAL_ENV"] = env.venv
    out.update({k: os.environ[k] for k in _PROXIES if k in os.environ})
    out.update(declared)
    return out
