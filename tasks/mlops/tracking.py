"""MLflow: logging a run, finding the champion and the PR's run, registering versions, moving aliases.

The block's credentials reach MLflow's client through its environment for the duration of a call
(``MlflowServer.get_client()``), never in argv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task

from blocks import MlflowServer
from opsflow.core.errors import MlopsError
from opsflow.core.threads import ContextThreadPool
from tasks.mlops.champion import Candidate, Champion
from tasks.mlops.model import ModelPackage

BATCH = 100
UPLOADS = 8  # artifact files sent at once


def _mlflow_down(server: MlflowServer, exc: Exception) -> MlopsError:
    return MlopsError(f"MLflow at {server.tracking_uri} did not answer ({type(exc).__name__}); "
                      f"start the tracking server (opsflow stack up) or fix the block, then re-run")


@task(name="check-mlflow", task_run_name="check-mlflow")
def check_mlflow(server: MlflowServer) -> None:
    """One cheap request to the tracking server before the experiment, so a server that does not answer fails
    the run at once instead of after an experiment that may take an hour.

    Raises:
        MlopsError: MLflow did not answer (after the block's retries).
    """
    from mlflow.exceptions import MlflowException

    try:
        with server.get_client() as client:
            client.search_experiments(max_results=1)
    except (MlflowException, OSError) as exc:
        raise _mlflow_down(server, exc) from None


@dataclass
class LoggedRun:
    """The MLflow run a PR's evaluation was logged as."""

    run_id: str
    experiment_id: str


def artifact_files(workdir: Path, candidate: Candidate, model: ModelPackage | None) -> list[tuple[str, str | None]]:
    """``(local file, artifact directory)`` of what a run logs: each plot at its path in the repository, each
    file of the model directory under ``model/`` (pure but for listing the model directory)."""
    files: list[tuple[str, str | None]] = []
    for rel in candidate.plots:
        parent = Path(rel).parent.as_posix()
        files.append((str(workdir / rel), None if parent == "." else parent))
    if model is not None:
        root = Path(model.path)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            files.append((str(path), Path("model", path.relative_to(root).parent).as_posix().removesuffix("/.")))
    return files


@task(name="log-to-mlflow", task_run_name="log-to-mlflow-{experiment}")
def log_to_mlflow(server: MlflowServer, experiment: str, workdir: Path, candidate: Candidate,
                  tags: dict[str, str], model: ModelPackage | None = None) -> LoggedRun:
    """Log params, metrics, tags, the plots (at their paths in the repository) and the MLflow model (``model/``)
    as one MLflow run; return its run and experiment ids.

    The params/metrics batches and the artifact files go up at once (one request each; sent one after the
    other, the ~10 files of a run were most of this task's time), then the run is marked finished.

    Raises:
        MlopsError: MLflow did not answer.
    """
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    files = artifact_files(workdir, candidate, model)
    try:
        with server.get_client() as client:
            found = client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else client.create_experiment(experiment)
            mrun = client.create_run(exp_id, tags=tags, run_name=tags.get("opsflow.run_name"))
            rid = mrun.info.run_id
            repo = get_artifact_repository(mrun.info.artifact_uri, tracking_uri=server.tracking_uri)
            metrics = [Metric(k, v, 0, 0) for k, v in candidate.metrics.items()]
            params = [Param(k, v) for k, v in candidate.params.items()]
            with ContextThreadPool(UPLOADS, thread_name_prefix="mlflow-log") as pool:
                sent = [pool.submit(client.log_batch, rid, metrics=metrics[i:i + BATCH], params=params[i:i + BATCH])
                        for i in range(0, max(len(metrics), len(params)), BATCH)]  # MLflow takes 100 params a batch
                sent += [pool.submit(repo.log_artifact, local, where) for local, where in files]
                for future in sent:
                    future.result()
            client.set_terminated(rid)
    except (MlflowException, OSError) as exc:
        raise _mlflow_down(server, exc) from None
    get_run_logger().info("logged MLflow run %s in experiment %s (%d artifact files)", rid, experiment, len(files))
    return LoggedRun(rid, exp_id)


@task(name="find-champion", task_run_name="find-champion-{model}")
def find_champion(server: MlflowServer, model: str, alias: str = "champion") -> Champion | None:
    """The model version holding ``alias`` with its run's metrics and params; ``None`` when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        with server.get_client() as client:
            try:
                version = client.get_model_version_by_alias(model, alias)
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                    return None
                raise
            data = client.get_run(version.run_id).data
    except (MlflowException, OSError) as exc:
        raise _mlflow_down(server, exc) from None
    return Champion(version=str(version.version), run_id=version.run_id, metrics=dict(data.metrics),
                    params=dict(data.params))


@dataclass
class FoundRun:
    run_id: str
    artifact_uri: str
    metrics: dict[str, float]
    params: dict[str, str]


@task(name="find-run-by-tree", task_run_name="find-run-by-tree-{tree:.12}")
def find_run_by_tree(server: MlflowServer, experiment: str, tree: str) -> FoundRun:
    """The newest MLflow run of ``experiment`` tagged with git tree ``tree`` (the PR's run for the merged code)."""
    from mlflow.exceptions import MlflowException

    try:
        with server.get_client() as client:
            exp = client.get_experiment_by_name(experiment)
            runs = client.search_runs([exp.experiment_id], f"tags.`opsflow.tree` = '{tree}'",
                                      order_by=["attributes.start_time DESC"], max_results=1) if exp else []
    except (MlflowException, OSError) as exc:
        raise _mlflow_down(server, exc) from None
    if not runs:
        raise MlopsError(f"no MLflow run in experiment {experiment!r} has tree {tree[:12]}: the PR pipeline did "
                         f"not evaluate the merged code; run it on the PR (or re-run it on the merge), then retry")
    found = runs[0]
    return FoundRun(found.info.run_id, found.info.artifact_uri, dict(found.data.metrics), dict(found.data.params))


@task(name="register-model", task_run_name="register-model-{model}")
def register_model(server: MlflowServer, model: str, run_id: str, tags: dict[str, str], promote: bool,
                   aliases: tuple[str, ...] = ("staging",), gate_alias: str = "champion") -> str:
    """Register ``run_id``'s model as a version of ``model`` with ``tags``; move ``aliases`` (and
    ``gate_alias`` when ``promote``). Idempotent: a version that already exists for the run is reused.
    """
    from mlflow.exceptions import MlflowException

    moved = [*aliases, *((gate_alias,) if promote else ())]
    try:
        with server.get_client() as client:
            try:
                client.get_registered_model(model)
            except MlflowException:
                client.create_registered_model(model)
            existing = client.search_model_versions(f"name = '{model}' and run_id = '{run_id}'")
            if existing:
                version = str(existing[0].version)
            else:
                uri = client.get_run(run_id).info.artifact_uri
                version = str(client.create_model_version(model, f"{uri}/model", run_id, tags=tags).version)
            for alias in moved:
                client.set_registered_model_alias(model, alias, version)
    except (MlflowException, OSError) as exc:
        raise _mlflow_down(server, exc) from None
    get_run_logger().info("model %s version %s (run %s); aliases %s", model, version, run_id, moved)
    return version


@task(name="set-model-alias", task_run_name="set-model-alias-{model}-{alias}")
def set_model_alias(server: MlflowServer, model: str, alias: str, version: str) -> None:
    """Point ``alias`` of registered model ``model`` at ``version`` (e.g. ``champion`` once approved)."""
    from mlflow.exceptions import MlflowException

    try:
        with server.get_client() as client:
            client.set_registered_model_alias(model, alias, version)
    except (MlflowException, OSError) as exc:
        raise _mlflow_down(server, exc) from None
    get_run_logger().info("model %s: alias %s -> version %s", model, alias, version)


def mlflow_run_url(server: MlflowServer, experiment_id: str, run_id: str) -> str:
    return f"{server.tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


@task(name="experiment-id", task_run_name="experiment-id-{experiment}")
def experiment_id(server: MlflowServer, experiment: str) -> str:
    """The MLflow experiment id of ``experiment`` (for links)."""
    with server.get_client() as client:
        return client.get_experiment_by_name(experiment).experiment_id


