"""MLOps tasks: pull DVC data, run the experiment, log to MLflow, compare with the champion, register.

Credentials come from blocks and go to DVC and MLflow in-process (DVC's ``remote_config``, the
MLflow client's environment for the duration of a call), never in argv or ``.dvc/config``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from prefect import get_run_logger, task

from blocks import MlflowServer, ObjectStore
from opsflow.errors import InvalidInput, OpsflowError, RemoteError
from opsflow.proc import run
from tasks.progress import StepProgress


class MlopsError(OpsflowError):
    """An MLOps step failed; the message says what happened and what to do."""


@dataclass
class PullResult:
    fetched: int
    data_hashes: dict[str, str]


@dataclass
class Candidate:
    metrics: dict[str, float]
    params: dict[str, str]
    plots: list[str] = field(default_factory=list)  # files under plots/, logged as MLflow artifacts there


@dataclass
class Champion:
    version: str
    run_id: str
    metrics: dict[str, float]
    params: dict[str, str]


@dataclass
class MetricRow:
    name: str
    direction: str
    threshold: float
    candidate: float
    champion: float | None
    delta: float | None
    delta_pct: float | None
    passed: bool


@dataclass
class Comparison:
    verdict: str  # "beats champion", "does not beat champion", "no champion yet"
    passed: bool
    rows: list[MetricRow] = field(default_factory=list)
    differing_params: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


def tracked_files(workdir: Path) -> list[Path]:
    """The ``*.dvc`` files of the checkout (the data it tracks; stage outputs are made by the experiment)."""
    return sorted(p for p in workdir.rglob("*.dvc") if p.is_file() and ".dvc" not in p.relative_to(workdir).parts[:-1])


def tracked_outs(workdir: Path) -> list[dict]:
    """The outputs the ``*.dvc`` files declare (``path``, ``md5``, ``size``, ...)."""
    return [out for dvc_file in tracked_files(workdir)
            for out in (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", [])]


def dvc_hashes(workdir: Path) -> dict[str, str]:
    """The md5 of every DVC-tracked output declared in ``*.dvc`` files."""
    return {out["path"]: out.get("md5", "") for out in tracked_outs(workdir)}


def tracked_bytes(workdir: Path) -> int:
    """The size of the data the ``*.dvc`` files declare (``size`` of each output, 0 where absent)."""
    return sum(int(out.get("size") or 0) for out in tracked_outs(workdir))


def directory_mb(root: Path) -> float:
    """MB of the files under ``root`` (0 when it does not exist yet)."""
    total = 0
    for path in root.rglob("*") if root.exists() else ():
        with contextlib.suppress(OSError):  # DVC moves temporary files while we look
            if path.is_file():
                total += path.stat().st_size
    return total / 1e6


def _remote_config(store: ObjectStore) -> dict[str, str]:
    return {"access_key_id": store.access_key_id.get_secret_value(),
            "secret_access_key": store.secret_access_key.get_secret_value(),
            "endpointurl": store.endpoint_url, "region": store.region}


# The checkout links the workspace to DVC's cache instead of copying every file a second time
# (the cache lives in the throw-away checkout, so a link is as good as a copy); reflink first, where
# the filesystem has it, keeps the files writable. Passed as a config override: the repo's .dvc/config
# is not changed. Read-only links make an experiment that writes into its inputs fail loudly.
CHECKOUT_CONFIG = {"cache": {"type": "reflink,hardlink,symlink,copy"}}


def check_remote_access(repo) -> None:
    """List the top of the DVC remote with the credentials DVC will use (one request).

    DVC reports a refused download only as "N files failed to download", the same words as data
    that was never pushed; listing first tells wrong credentials apart, before anything is written.
    Raises ``PermissionError`` when the remote refuses the credentials.
    """
    remote = repo.cloud.get_remote(command="pull")
    try:
        remote.fs.ls(remote.path, detail=False)
    except FileNotFoundError:
        pass  # nothing under the prefix: the pull itself says which data is missing


def _refused(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, PermissionError) or any(
        s in text for s in ("403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"))


@task(name="dvc-pull", task_run_name="dvc-pull", retries=1, retry_delay_seconds=2)
def dvc_pull(workdir: Path, store: ObjectStore, jobs: int = 16) -> PullResult:
    """Fetch and check out the repository's DVC data from the remote with ``store``'s credentials.

    Raises ``MlopsError`` saying what to do when the remote refuses the credentials or lacks the
    data, ``RemoteError`` for anything else DVC reports.
    """
    from dvc.repo import Repo

    logger = get_run_logger()
    total_mb = tracked_bytes(workdir) / 1e6
    try:
        with Repo(str(workdir), config=CHECKOUT_CONFIG, remote_config=_remote_config(store)) as repo:
            check_remote_access(repo)
            cache = Path(repo.cache.local_cache_dir)
            # DVC's API has no progress callback: what has arrived is what is in its cache.
            progress = StepProgress("dvc pull", total=total_mb, unit="MB", measure=lambda: directory_mb(cache),
                                    logger=logger) if total_mb else contextlib.nullcontext()
            with progress:
                result = repo.pull(targets=[str(p) for p in tracked_files(workdir)] or None, jobs=jobs)
    except Exception as exc:  # noqa: BLE001 - DVC raises many types; name the situation instead
        text = str(exc)
        if _refused(exc):
            raise MlopsError(f"DVC pull: the remote refused the credentials of object store {store.bucket!r} "
                             f"({type(exc).__name__}): they are wrong or may not read it; fix the block's "
                             f"access keys, then re-run") from None
        if any(s in text.lower() for s in ("missing", "checkout failed", "failed to pull", "failed to download")):
            raise MlopsError(f"DVC pull: the data this commit needs is not in the remote cache ({' '.join(text.split())[:200]}); "
                             f"run `dvc push` from the branch that produced it, then re-run") from None
        raise RemoteError(f"DVC pull failed: {type(exc).__name__}: {text.splitlines()[0] if text else ''}") from None
    stats = result.get("stats", result) if isinstance(result, dict) else {}
    hashes = dvc_hashes(workdir)
    logger.info("dvc pull: %s file(s) fetched; data %s", stats.get("fetched", 0), hashes)
    return PullResult(fetched=int(stats.get("fetched", 0)), data_hashes=hashes)


@task(name="run-experiment", task_run_name="run-experiment")
def run_experiment(workdir: Path, command: list[str] | None = None, timeout: float = 900) -> Candidate:
    """Run the repo's declared command (or ``dvc repro`` when it has a ``dvc.yaml``); read metrics and params."""
    bindir = str(Path(sys.executable).parent)
    if command is None:
        if not (workdir / "dvc.yaml").exists():
            raise InvalidInput("the repository has no dvc.yaml and no experiment command was declared")
        command = [str(Path(bindir) / "dvc"), "repro"]
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        run(command, cwd=workdir, env=env, timeout=timeout, logger=get_run_logger(),
            hint="the experiment command failed: fix it in the branch and push again")
    except OpsflowError as exc:
        raise MlopsError(f"experiment failed: {exc}") from None
    metrics_file = workdir / "metrics.json"
    if not metrics_file.exists():
        raise MlopsError("the experiment wrote no metrics.json: make it write its metrics there")
    metrics = {k: float(v) for k, v in json.loads(metrics_file.read_text()).items()}
    plots = sorted(p.relative_to(workdir).as_posix() for p in (workdir / "plots").rglob("*") if p.is_file()) \
        if (workdir / "plots").is_dir() else []
    return Candidate(metrics=metrics, params=flat_params(workdir), plots=plots)


def flat_params(workdir: Path) -> dict[str, str]:
    """``params.yaml`` flattened to ``section.key -> str(value)``."""
    path = workdir / "params.yaml"
    out: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = str(value)

    if path.exists():
        walk("", yaml.safe_load(path.read_text()) or {})
    return out


@contextlib.contextmanager
def mlflow_client(server: MlflowServer):
    """An ``MlflowClient`` with the block's URI, timeouts and credentials set for the duration of the call."""
    from mlflow.tracking import MlflowClient

    env = server.client_env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield MlflowClient(tracking_uri=server.tracking_uri, registry_uri=server.tracking_uri)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _mlflow_down(server: MlflowServer, exc: Exception) -> MlopsError:
    return MlopsError(f"MLflow at {server.tracking_uri} did not answer ({type(exc).__name__}); "
                      f"start the tracking server (opsflow stack up) or fix the block, then re-run")


@task(name="log-to-mlflow", task_run_name="log-to-mlflow-{experiment}")
def log_to_mlflow(server: MlflowServer, experiment: str, workdir: Path, candidate: Candidate,
                  tags: dict[str, str], artifacts: list[str] = ("model.pkl", "plots")) -> str:
    """Log params, metrics, tags and artifacts (model, plots) as one MLflow run; return its run id."""
    from mlflow.exceptions import MlflowException

    try:
        with mlflow_client(server) as client:
            found = client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else client.create_experiment(experiment)
            mrun = client.create_run(exp_id, tags=tags, run_name=tags.get("opsflow.run_name"))
            rid = mrun.info.run_id
            from mlflow.entities import Metric, Param

            client.log_batch(rid, metrics=[Metric(k, v, 0, 0) for k, v in candidate.metrics.items()],
                             params=[Param(k, v) for k, v in candidate.params.items()])
            for rel in artifacts:
                path = workdir / rel
                if path.is_dir():
                    client.log_artifacts(rid, str(path), rel)
                elif path.exists():
                    client.log_artifact(rid, str(path), "model" if rel == "model.pkl" else None)
            client.set_terminated(rid)
    except (MlflowException, OSError) as exc:
        raise _mlflow_down(server, exc) from None
    get_run_logger().info("logged MLflow run %s in experiment %s", rid, experiment)
    return rid


@task(name="find-champion", task_run_name="find-champion-{model}")
def find_champion(server: MlflowServer, model: str, alias: str = "champion") -> Champion | None:
    """The model version holding ``alias`` with its run's metrics and params; ``None`` when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        with mlflow_client(server) as client:
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


def compare_to_champion(candidate: Candidate, champion: Champion | None, spec: dict[str, dict]) -> Comparison:
    """Compare metric by metric, honouring each metric's ``direction`` (higher/lower) and ``threshold``.

    The candidate beats the champion when no metric's gain (in its direction) is below its
    ``threshold`` (0: no regression; 0.01: must gain 0.01; -0.01: may lose 0.01) and one improves.
    Raises ``MlopsError`` when a configured metric is missing from the candidate or the champion.
    """
    rows: list[MetricRow] = []
    for name, rule in spec.items():
        direction = rule.get("direction", "higher")
        if direction not in ("higher", "lower"):
            raise InvalidInput(f"metric {name}: direction must be 'higher' or 'lower', not {direction!r}")
        threshold = float(rule.get("threshold", 0.0))
        if name not in candidate.metrics:
            raise MlopsError(f"metric {name!r} is missing from the candidate's metrics.json: "
                             f"make the experiment write it or remove it from opsflow-ml.yaml")
        cand = candidate.metrics[name]
        if champion is None:
            rows.append(MetricRow(name, direction, threshold, cand, None, None, None, True))
            continue
        if name not in champion.metrics:
            raise MlopsError(f"metric {name!r} is missing from the champion (version {champion.version}): "
                             f"re-log the champion with it, or drop the metric from opsflow-ml.yaml")
        champ = champion.metrics[name]
        delta = cand - champ
        pct = (delta / abs(champ) * 100) if champ else None
        gain = delta if direction == "higher" else -delta
        rows.append(MetricRow(name, direction, threshold, cand, champ, delta, pct, gain >= threshold))
    if champion is None:
        return Comparison("no champion yet", True, rows)
    differing = {k: (champion.params.get(k), candidate.params.get(k))
                 for k in sorted(set(champion.params) | set(candidate.params))
                 if champion.params.get(k) != candidate.params.get(k)}
    improved = any((r.delta or 0) * (1 if r.direction == "higher" else -1) > 0 for r in rows)
    passed = all(r.passed for r in rows) and improved
    return Comparison("beats champion" if passed else "does not beat champion", passed, rows, differing)


def render_report(comparison: Comparison, model: str, data_hashes: dict[str, str], mlflow_url: str,
                  prefect_url: str | None, champion: Champion | None, plots: list[str] = ()) -> str:
    """The PR comment / markdown artifact; ``plots`` (artifact paths of the MLflow run) are linked
    to their page in the MLflow UI, never uploaded elsewhere."""
    thresholds = ", ".join(f"{r.name} {'≥' if r.direction == 'higher' else '≤'} champion "
                           f"{'+' if r.direction == 'higher' else '-'}{r.threshold:g}" for r in comparison.rows)
    icon = "✅" if comparison.passed else "❌"
    lines = [f"### MLOps: {model}",
             f"**{icon} {comparison.verdict}**"
             + (f" (champion v{champion.version})" if champion else "") + f" — thresholds: {thresholds}", "",
             "| metric | candidate | champion | Δ | Δ% | pass/fail |", "|---|---|---|---|---|---|"]
    for r in comparison.rows:
        fmt = (lambda v: "—" if v is None else f"{v:.4f}")
        pct = "—" if r.delta_pct is None else f"{r.delta_pct:+.2f}%"
        delta = "—" if r.delta is None else f"{r.delta:+.4f}"
        verdict = "—" if r.champion is None else ("pass" if r.passed else "fail")
        arrow = "↑" if r.direction == "higher" else "↓"
        lines.append(f"| {r.name} ({arrow}) | {fmt(r.candidate)} | {fmt(r.champion)} | {delta} | {pct} | {verdict} |")
    if comparison.differing_params:
        lines += ["", "**Params that differ from the champion:**", "", "| param | champion | candidate |",
                  "|---|---|---|"]
        lines += [f"| {k} | {a} | {b} |" for k, (a, b) in comparison.differing_params.items()]
    lines += ["", "**Data version (DVC):** " + (", ".join(f"`{k}` {v}" for k, v in data_hashes.items()) or "none"),
              ""]
    if plots:
        lines += ["**Plots:** " + ", ".join(f"[{Path(p).name}]({mlflow_url}/artifacts/{p})" for p in plots), ""]
    lines.append(f"[MLflow run]({mlflow_url})" + (f" · [Prefect run]({prefect_url})" if prefect_url else ""))
    return "\n".join(lines)


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
        with mlflow_client(server) as client:
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
        with mlflow_client(server) as client:
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
        with mlflow_client(server) as client:
            client.set_registered_model_alias(model, alias, version)
    except (MlflowException, OSError) as exc:
        raise _mlflow_down(server, exc) from None
    get_run_logger().info("model %s: alias %s -> version %s", model, alias, version)


@dataclass
class MlConfig:
    model_name: str
    champion_alias: str = "champion"
    metrics: dict[str, dict] = field(default_factory=dict)
    command: list[str] | None = None


def load_ml_config(workdir: Path) -> MlConfig:
    """``opsflow-ml.yaml`` of the checkout: model name, champion alias, metric directions and thresholds."""
    path = workdir / "opsflow-ml.yaml"
    if not path.exists():
        raise InvalidInput("the repository has no opsflow-ml.yaml: declare model_name and metrics there")
    raw = yaml.safe_load(path.read_text()) or {}
    if not raw.get("model_name") or not isinstance(raw.get("metrics"), dict) or not raw["metrics"]:
        raise InvalidInput("opsflow-ml.yaml needs model_name and a non-empty metrics mapping")
    command = raw.get("command")
    if command is not None and (not isinstance(command, list) or not all(isinstance(a, str) for a in command)):
        raise InvalidInput("opsflow-ml.yaml: command must be a list of strings (argv), not a shell string")
    return MlConfig(str(raw["model_name"]), str(raw.get("champion_alias", "champion")), raw["metrics"], command)


def run_tags(checkout, branch: str | None, pr: int | None, repo: str, data_hashes: dict[str, str]) -> dict[str, str]:
    """The MLflow tags that tie a run to its code and data."""
    tags = {"opsflow.git_sha": checkout.sha, "opsflow.tree": checkout.tree_id(), "opsflow.repo": repo,
            "mlflow.source.git.commit": checkout.sha}
    if branch:
        tags["opsflow.branch"] = branch
    if pr is not None:
        tags["opsflow.pr"] = str(pr)
    tags.update({f"opsflow.dvc.{k}": v for k, v in data_hashes.items()})
    return tags


def mlflow_run_url(server: MlflowServer, experiment_id: str, run_id: str) -> str:
    return f"{server.tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


@task(name="experiment-id", task_run_name="experiment-id-{experiment}")
def experiment_id(server: MlflowServer, experiment: str) -> str:
    """The MLflow experiment id of ``experiment`` (for links)."""
    with mlflow_client(server) as client:
        return client.get_experiment_by_name(experiment).experiment_id


@task(name="publish-report", task_run_name="publish-report-{key}")
def publish_report(key: str, markdown: str) -> None:
    """The report as a Prefect markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=markdown, key=key, description="MLOps evaluation against the champion")
