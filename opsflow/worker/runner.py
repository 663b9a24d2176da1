"""One flow run, executed in a child forked from the zygote, with Prefect's own engine.

This is ``python -m prefect.engine`` (``prefect/engine.py``) minus the interpreter start:
``load_flow_run`` → load the flow from the deployment → ``run_flow`` inside
``handle_engine_signals``, which turns the engine's outcome into the exit code (0 once the engine
has reported a final state, 1 on an error it could not report). The worker marks the run
``Crashed`` on any other exit.

Before the flow runs, the child (already in its own session, see :mod:`opsflow.worker.zygote`):

- works in ``job["workdir"]``, a fresh directory the worker made for this run and removes after it;
- applies the run's environment (the job configuration's ``env``: Prefect's settings and run ids,
  then the job variables' ``env`` of the pool, the deployment and the run, merged by Prefect) to
  its own ``os.environ`` only, and re-reads Prefect's settings when that changes a ``PREFECT_*``
  variable;
- sends its output to the worker's (``stream_output``) or to ``/dev/null``;
- gets the flow's code the way the deployment says: its pull steps through Prefect's step runner
  (``set_working_directory`` for ``prefect.yaml`` and ``flow.from_source(<local dir>)``,
  ``git_clone`` ... clone into the run's directory; a ``git_clone`` of one commit, as ``opsflow apply``
  writes it, runs the worker's own preloaded code when it is that commit and otherwise a clone of
  the commit cached per commit, see :func:`pinned_commit`), else its storage block, else
  ``deployment.path`` used in place. The flow is imported from that directory, which stays on
  ``sys.path``; it then runs with the run's own directory as its working directory.

Before the flow's code is fetched, the child starts in the background what the engine would otherwise wait
for on its way to ``Running`` (the suspension observer), and takes the API version checks the worker passed
(:mod:`opsflow.worker.prefect_adapter`). Once the flow is imported it starts the flow's declared first reads
(``blocks.loading.start_declared_reads``: its blocks) and, for a flow that names no result storage, the read of
the server's default result storage, all beside the engine's own round trips.

Modules the zygote preloaded from the worker's checkout (``flows``, ``tasks``, ``blocks``) are
dropped from ``sys.modules`` when the deployment's code lives elsewhere or one of their files
changed since the zygote imported it, so a run always imports its deployment's current code;
third-party modules stay warm (and the worker starts a new zygote with the current code,
:class:`opsflow.worker.zygote.Zygotes`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

#: Top-level packages of the worker's own code; never dropped from a child's ``sys.modules``.
KEEP_PACKAGES = frozenset({"opsflow"})


def apply_env(env: Mapping[str, str | None], environ: dict | os._Environ = os.environ) -> bool:
    """Set (or, for ``None``, unset) each variable in ``environ``, this process's environment by default.

    Returns True when a ``PREFECT_*`` variable changed (Prefect's settings must then be read again).
    """
    # ``PREFECT__*`` (two underscores) are run ids Prefect reads from the environment, not settings.
    prefect_changed = any(key.startswith("PREFECT_") and not key.startswith("PREFECT__") and environ.get(key) != value
                          for key, value in env.items())
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return prefect_changed


#: ``{module file: mtime_ns}`` of the project modules the zygote preloaded (set in the zygote, read in children).
PRELOADED: dict[str, int] = {}


def project_modules(project_root: Path, keep: frozenset[str] = KEEP_PACKAGES) -> dict[str, str]:
    """``{name: file}`` of the imported modules of ``project_root``'s top-level packages and modules."""
    roots = {str(project_root), str(project_root.resolve())}
    tops = set()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if "." in name or not isinstance(file, str) or name in keep:
            continue
        parent = os.path.dirname(file)
        if os.path.basename(file) == "__init__.py":
            parent = os.path.dirname(parent)
        if parent in roots:
            tops.add(name)
    return {name: getattr(module, "__file__", None) or "" for name, module in list(sys.modules.items())
            if name.split(".", 1)[0] in tops}


def remember_preloaded(project_root: Path) -> None:
    """In the zygote, after preloading: note each project module file's mtime."""
    PRELOADED.clear()
    for file in project_modules(project_root).values():
        with contextlib.suppress(OSError):
            PRELOADED[file] = os.stat(file).st_mtime_ns


def changed_file(files: Mapping[str, int]) -> str | None:
    """The first of ``{file: mtime_ns}`` that changed on disk since (or is gone), else None."""
    for file, mtime in files.items():
        try:
            if os.stat(file).st_mtime_ns != mtime:
                return file
        except OSError:
            return file
    return None


def preloaded_changed() -> bool:
    """True when a preloaded project file changed on disk since the zygote imported it (a ``git pull``)."""
    return changed_file(PRELOADED) is not None


def forget_project_modules(project_root: Path, keep: frozenset[str] = KEEP_PACKAGES) -> list[str]:
    """Drop the modules imported from ``project_root``'s top-level packages; returns their names."""
    dropped = list(project_modules(project_root, keep))
    for name in dropped:
        del sys.modules[name]
    return dropped


def _step_directory(output: Mapping[str, Any]) -> Path:
    """The code directory the pull steps ended in (their ``directory`` output, else the cwd)."""
    directory = output.get("directory")
    if directory:
        candidate = Path(directory).expanduser()
        if not candidate.is_absolute():
            candidate = Path.cwd() / candidate
        if candidate.is_dir():
            return candidate.resolve()
    return Path.cwd()


SET_WORKING_DIRECTORY_STEPS = frozenset({"prefect.deployments.steps.set_working_directory",
                                         "prefect.deployments.steps.pull.set_working_directory"})


def plain_directory(pull_steps: list[dict] | None) -> Path | None:
    """The directory when the pull steps only ``set_working_directory`` to literal paths, else ``None``.

    Then there is nothing to pull: the worker changes directory itself instead of starting
    Prefect's step runner, which costs ~0.2-0.5 s per run here (it resolves templates and
    emits a ``pull-step.executed`` event per step).
    """
    if not pull_steps:
        return None
    directory = None
    for step in pull_steps:
        if not isinstance(step, dict) or len(step) != 1:
            return None
        (name, inputs), = step.items()
        if name not in SET_WORKING_DIRECTORY_STEPS or not isinstance(inputs, dict) or set(inputs) - {"directory", "id"}:
            return None
        value = inputs.get("directory")
        if not isinstance(value, str) or "{{" in value:
            return None
        path = Path(value).expanduser()
        directory = path if path.is_absolute() or directory is None else directory / path
    return directory


GIT_CLONE_STEPS = frozenset({"prefect.deployments.steps.git_clone", "prefect.deployments.steps.pull.git_clone"})


def pinned_commit(pull_steps: list[dict] | None) -> tuple[str, str] | None:
    """``(repository, commit)`` when the pull steps are one ``git_clone`` of a full commit SHA, else ``None``.

    That is what ``opsflow apply`` writes (``deployments/prefect.yaml``): every worker runs exactly
    the commit the deployment was applied from.
    """
    from opsflow.core.version import FULL_SHA

    if not pull_steps or len(pull_steps) != 1 or not isinstance(pull_steps[0], dict) or len(pull_steps[0]) != 1:
        return None
    (name, inputs), = pull_steps[0].items()
    if name not in GIT_CLONE_STEPS or not isinstance(inputs, dict):
        return None
    repository, commit = inputs.get("repository"), inputs.get("commit_sha")
    if not isinstance(repository, str) or "{{" in repository or not isinstance(commit, str):
        return None
    return (repository, commit) if FULL_SHA.match(commit) else None


def _pinned_code(deployment, flow_run, run_logger, repository: str, commit: str) -> Path:
    """The directory holding ``commit``: the worker's own code when it is that commit, else a cached clone.

    The worker's own checkout (or installed wheel) stays on the fast path: its modules are preloaded
    (and imported again when a file changed since, as for any checkout; so a developer's uncommitted
    edits on the local stack run too). Any other commit is cloned once through the deployment's pull
    step (Prefect's ``git_clone``) into ``<code cache>/<commit>`` (renamed into place when complete,
    so a half clone is never used) and reused by every later run of that commit.
    """
    from opsflow.core.paths import PROJECT_ROOT, code_cache_root, prune_code_cache
    from opsflow.core.version import own_commit

    if commit == own_commit(PROJECT_ROOT):
        run_logger.info(f"Flow code: commit {commit[:12]}, the worker's own code ({PROJECT_ROOT})")
        return PROJECT_ROOT.resolve()
    root = code_cache_root()
    cached = root / commit
    if cached.is_dir():
        os.utime(cached)
        run_logger.info(f"Flow code: commit {commit[:12]} from the worker's cache ({cached})")
        return cached
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".clone-{commit[:12]}-", dir=root))
    here = Path.cwd()
    run_logger.info(f"Flow code: cloning commit {commit[:12]} of {repository} (this worker runs "
                    f"{(own_commit(PROJECT_ROOT) or 'unknown')[:12]})")
    try:
        os.chdir(staging)
        cloned = _run_pull_steps(deployment, flow_run, run_logger)
        try:
            os.rename(cloned, cached)
        except OSError:
            if not cached.is_dir():  # else another run of this commit finished its clone first: use that one
                raise
    finally:
        os.chdir(here)
        shutil.rmtree(staging, ignore_errors=True)
    prune_code_cache(root, keep=cached)
    return cached


def _run_pull_steps(deployment, flow_run, run_logger) -> Path:
    """The deployment's pull steps through Prefect's step runner, from the cwd; returns the code directory."""
    from prefect.deployments.steps.core import StepExecutionError, run_steps
    from prefect.utilities.asyncutils import run_coro_as_sync

    try:
        output = run_coro_as_sync(run_steps(deployment.pull_steps, print_function=run_logger.info,
                                            deployment=deployment, flow_run=flow_run, logger=run_logger))
    except StepExecutionError as exc:
        run_logger.error(str(exc.__cause__ or exc))
        raise
    return _step_directory(output or {})


def fetch_code(deployment, flow_run, run_logger, workdir: Path) -> Path:
    """Put the deployment's code in place (from the run's directory); returns the directory to import from."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    os.chdir(workdir)
    plain = plain_directory(deployment.pull_steps)
    if plain is not None:
        if not plain.is_absolute() or not plain.is_dir():
            raise FileNotFoundError(f"the deployment's working directory {str(plain)!r} does not exist on this worker")
        run_logger.info(f"Flow code directory: {plain} (the deployment's set_working_directory step)")
        return plain.resolve()
    pinned = pinned_commit(deployment.pull_steps)
    if pinned is not None:
        code_dir = _pinned_code(deployment, flow_run, run_logger, *pinned)
        os.chdir(workdir)
        return code_dir
    if deployment.pull_steps:
        run_logger.info(f"Running {len(deployment.pull_steps)} deployment pull step(s)")
        return _run_pull_steps(deployment, flow_run, run_logger)
    if deployment.storage_document_id:
        from prefect.blocks.core import Block
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            document = client.read_block_document(deployment.storage_document_id)
        storage = Block._from_block_document(document)
        run_logger.info(f"Downloading flow code from storage at {deployment.path!r}")
        result = storage.get_directory(from_path=deployment.path, local_path=str(workdir))
        if hasattr(result, "__await__"):
            run_coro_as_sync(result)
        return workdir
    if deployment.path and Path(deployment.path).is_dir():
        return Path(deployment.path).resolve()
    return workdir


def preloaded_flow(entrypoint: str, code_dir: Path):
    """The flow object of a ``path.py:name`` entrypoint when that file is already imported (the zygote preloaded
    it and it is current), else None. Prefect's loader would execute the file again as a new module."""
    from prefect.flows import Flow

    path, _, name = entrypoint.rpartition(":")
    if not path.endswith(".py") or not name.isidentifier():
        return None
    target = str((code_dir / path).resolve())
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == target:
            found = getattr(module, name, None)
            return found if isinstance(found, Flow) else None
    return None


def import_flow(entrypoint: str, code_dir: Path):
    """Import the entrypoint's flow from ``code_dir`` with Prefect's loaders (a plain function becomes a flow)."""
    from prefect.exceptions import MissingFlowError
    from prefect.flows import load_flow_from_entrypoint, load_function_and_convert_to_flow
    from prefect.utilities.filesystem import relative_path_to_current_platform

    os.chdir(code_dir)
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    preloaded = preloaded_flow(entrypoint, code_dir)
    if preloaded is not None:
        return preloaded
    target = str(relative_path_to_current_platform(entrypoint)) if ":" in entrypoint else entrypoint
    try:
        return load_flow_from_entrypoint(target, use_placeholder_flow=False)
    except MissingFlowError:
        if ":" not in entrypoint:
            raise
        return load_function_and_convert_to_flow(target)


def _run(flow_run_id: UUID, job: Mapping[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import FlowRun
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect.context import SettingsContext, get_settings_context
    from prefect.flow_engine import flow_run_logger, load_flow_run, run_flow
    from prefect.settings import Settings

    from blocks.loading import start_declared_reads
    from opsflow.worker import prefect_adapter
    from opsflow.worker.prefect_adapter import drive_run_flow_result, prompt_heartbeat_stop

    prompt_heartbeat_stop()  # the run ends when its flow does, not up to a heartbeat step later
    prefect_adapter.remember_api_versions_checked(job.get("api_versions_checked"))
    workdir = Path(job["workdir"])
    # The worker passes the run as it claimed it and the deployment it read meanwhile, which saves
    # this process two requests (and a client) before the engine starts; the engine re-reads the run.
    if job.get("flow_run"):
        flow_run = FlowRun.model_validate(job["flow_run"])
    else:
        flow_run = load_flow_run(flow_run_id)
    run_logger = flow_run_logger(flow_run=flow_run)
    if flow_run.deployment_id is None:
        raise RuntimeError(f"flow run {flow_run_id} has no deployment; a worker only runs deployments")
    if job.get("deployment"):
        deployment = DeploymentResponse.model_validate(job["deployment"])
    else:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment(flow_run.deployment_id)
    prefect_adapter.seed_related_objects(flow_run, deployment, job.get("related"))  # its first event reads none
    # Prefect reads its settings once; re-read them when the run's env changes one (~0.1 s).
    settings = Settings() if apply_env(job.get("env") or {}) else get_settings_context().settings
    with SettingsContext(profile=get_settings_context().profile, settings=settings), \
            contextlib.closing(prefect_adapter.start_suspension_observer(flow_run.id)):
        try:
            code_dir = fetch_code(deployment, flow_run, run_logger, workdir)
            project_root = job.get("project_root")
            if project_root and (code_dir != Path(project_root).resolve() or preloaded_changed()):
                forget_project_modules(Path(project_root))
            flow = import_flow(deployment.entrypoint, code_dir)
        except Exception:
            run_logger.exception("Unexpected exception encountered when trying to load flow")
            raise
        os.chdir(workdir)
        unknown = unknown_parameters(flow.fn, flow_run.parameters or {})
        if unknown:
            report_bad_parameters(flow_run.id, flow.name, flow.fn, unknown, run_logger)
            return
        # The engine's round trips on its way to Running took 70-100 ms on the default stack; the flow's blocks, read
        # after them, 40-45 ms more before its first step: read beside them.
        start_declared_reads(flow.fn, kwargs=flow_run.parameters or {}, logger=run_logger)
        if flow.result_storage is None:
            # The engine reads the server's default result storage on its way to Running, and its tasks after:
            # read once, from now, beside the engine's round trips (prefect_adapter). A flow that names its
            # storage never asks (opsflow's do): then the read would only load the server and this process.
            prefect_adapter.remember_server_result_storage()
        result = run_flow(flow, flow_run=flow_run, error_logger=run_logger)
        drive_run_flow_result(flow, result)


def rehearse() -> None:
    """In the zygote, after preloading: what every run's start would otherwise do for the first time in each child.

    Pydantic builds a model's validator on its first use: validating the run and the deployment the worker
    passes took 11-14 and 6-11 ms in each forked child, the three related objects 6-9 ms (2.5-3 ms each in a
    quiet process: a child also copies every page it writes). Done once here, every child inherits it."""
    from uuid import uuid4

    from prefect.client.schemas.objects import Flow, FlowRun, WorkPool, WorkQueue
    from prefect.client.schemas.responses import DeploymentResponse

    stamp = "2026-01-01T00:00:00Z"
    # The related objects the worker passes too (prefect_adapter.seed_related_objects).
    Flow.model_validate({"id": str(uuid4()), "name": "rehearsal", "created": stamp})
    WorkPool.model_validate({"id": str(uuid4()), "name": "rehearsal", "type": "opsflow", "created": stamp})
    WorkQueue.model_validate({"id": str(uuid4()), "name": "rehearsal", "work_pool_id": str(uuid4())})
    state = {"type": "PENDING", "name": "Pending", "timestamp": stamp, "state_details": {}}
    FlowRun.model_validate({"id": str(uuid4()), "flow_id": str(uuid4()), "name": "rehearsal", "state": state,
                            "deployment_id": str(uuid4()), "parameters": {}, "created": stamp})
    DeploymentResponse.model_validate({"id": str(uuid4()), "flow_id": str(uuid4()), "name": "rehearsal",
                                       "created": stamp, "entrypoint": "flows/f.py:f",
                                       "pull_steps": [{"prefect.deployments.steps.git_clone": {
                                           "repository": "https://git.example/r.git", "commit_sha": "0" * 40}}]})


def unknown_parameters(fn, parameters: Mapping[str, Any]) -> list[str]:
    """The names in ``parameters`` that ``fn`` does not take (none when it takes ``**kwargs``).

    Prefect's engine matches a run's parameters to the flow's signature before it starts orchestrating
    the run, so an unknown one ends the process with an error and no state (the run showed Crashed,
    "exited with code 1"); checked here first, the run ends Failed with the parameter named.
    """
    import inspect

    signature = inspect.signature(fn)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return []
    accepted = {name for name, p in signature.parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    return sorted(set(parameters) - accepted)


def report_bad_parameters(flow_run_id: UUID, flow_name: str, fn, unknown: list[str], run_logger) -> None:
    """End the run ``Failed`` naming the parameters its flow does not take."""
    import inspect

    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    takes = ", ".join(inspect.signature(fn).parameters) or "no parameters"
    message = (f"Flow {flow_name!r} has no parameter {', '.join(repr(n) for n in unknown)} (it takes: {takes}); "
               "start the run again without it.")
    run_logger.error(message)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Failed(message=message))


def execute(job: Mapping[str, Any]) -> int:
    """Run the flow run ``job["flow_run_id"]`` in this (forked) process; returns the exit code."""
    from prefect.engine import handle_engine_signals

    os.chdir(job["workdir"])
    if not job.get("stream_output", True):
        quiet_output()
    os.environ["PREFECT__FLOW_RUN_ID"] = job["flow_run_id"]
    flow_run_id = UUID(job["flow_run_id"])
    try:
        with handle_engine_signals(flow_run_id):
            _run(flow_run_id, job)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def quiet_output() -> None:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``/dev/null``."""
    sys.stdout.flush()
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    finally:
        os.close(devnull)
