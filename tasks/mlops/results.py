"""What an experiment produced, as DVC declares it: metrics, params and plots read through DVC's own API
(``repo.metrics.show()``, ``params.show()``, ``plots.show()``: the files ``dvc.yaml`` names, in stages or at the
top level), in opsflow's process. Nested keys are joined with dots, as ``dvc metrics show`` prints them (dvclive's
``eval/metrics.json`` ``{"avg_prec": {"test": 0.9}}`` is ``avg_prec.test``); a key two files share is qualified
with its file (``eval/metrics.json:avg_prec.test``), as ``dvc.api.metrics_show`` does.

A repository whose pipeline declares no metrics (an experiment run by its own ``command``) is read from
``metrics.json`` and ``plots/`` at its top, as before.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from opsflow.core.errors import MlopsError
from tasks.mlops.champion import Candidate

_MLFLOW_KEY_BAD = re.compile(r"[^\w./\- :]")
LEGACY_METRICS, LEGACY_PLOTS = "metrics.json", "plots"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level, keys joined with dots (pure); lists and scalars are values."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(value, name) if isinstance(value, dict) else {name: value})
    return out


def merge_files(by_file: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One mapping from per-file flattened values; a key in several files is qualified ``file:key`` (pure)."""
    counts = Counter(k for values in by_file.values() for k in values)
    merged: dict[str, Any] = {}
    for name, values in by_file.items():
        merged.update({(k if counts[k] == 1 else f"{name}:{k}"): v for k, v in values.items()})
    return merged


def numeric(values: dict[str, Any]) -> dict[str, float]:
    """The numbers among metric values (booleans and text left out), keys made valid for MLflow (pure)."""
    return {_MLFLOW_KEY_BAD.sub("_", k): float(v) for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def _files(shown: dict, kind: str) -> dict[str, dict]:
    """``{file: flattened data}`` from a ``metrics.show()``/``params.show()`` answer; a declared file that could
    not be read is an error naming it."""
    rev = next(iter(shown.values()), {}) or {}
    out: dict[str, dict] = {}
    for name, entry in (rev.get("data") or {}).items():
        if "error" in entry:
            error = entry["error"]
            why = "it does not exist" if isinstance(error, FileNotFoundError) else f"{type(error).__name__}: {error}"
            raise MlopsError(f"dvc.yaml declares the {kind} file {name}, but it cannot be read ({why}): make the "
                             f"experiment write it, or remove it from dvc.yaml")
        out[name] = flatten(entry.get("data") or {})
    return out


def plot_files(shown: dict) -> list[str]:
    """The plot files DVC found for the workspace (image and data plots, directories expanded), sorted."""
    rev = next(iter(shown.values()), {}) or {}
    sources = (rev.get("sources") or {}).get("data") or {}
    return sorted(name for name, entry in sources.items() if "error" not in entry)


def read_dvc_results(workdir: Path) -> tuple[dict[str, dict], dict[str, dict], list[str]]:
    """Metrics and params per file and the plot files, as DVC reads them in the checkout."""
    from dvc.repo import Repo

    with Repo(str(workdir)) as repo:
        metrics = _files(repo.metrics.show(), "metrics")
        params = _files(repo.params.show(), "params")
        plots = plot_files(repo.plots.show())
    return metrics, params, plots


def legacy_results(workdir: Path) -> tuple[dict[str, dict], list[str]]:
    """``metrics.json`` and the files under ``plots/`` at the top of the checkout (no metrics in dvc.yaml)."""
    import json

    path = workdir / LEGACY_METRICS
    if not path.exists():
        raise MlopsError("the experiment's metrics were not found: declare them in dvc.yaml (`metrics:`), "
                         "or write metrics.json at the top of the repository")
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise MlopsError("metrics.json is not valid JSON: make the experiment write a JSON object") from None
    root = workdir / LEGACY_PLOTS
    plots = sorted(p.relative_to(workdir).as_posix() for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    return {LEGACY_METRICS: flatten(data)}, plots


@task(name="read-results", task_run_name="read-results")
def read_results(workdir: Path) -> Candidate:
    """The experiment's metrics, params and plots as the repository's DVC pipeline declares them.

    Args:
        workdir: the checkout, after the experiment ran.
    Returns:
        The candidate: numeric metrics (flattened), params (flattened, as text), plot files (paths in the checkout).
    Raises:
        MlopsError: a declared file is missing or unreadable, or no metrics were found at all.
    """
    metrics_by_file, params_by_file, plots = read_dvc_results(workdir)
    if not metrics_by_file:
        metrics_by_file, legacy_plots = legacy_results(workdir)
        plots = plots or legacy_plots
    metrics = numeric(merge_files(metrics_by_file))
    if not metrics:
        raise MlopsError(f"the metrics files ({', '.join(metrics_by_file)}) hold no numbers: make the experiment "
                         f"write numeric metrics")
    params = {k: str(v) for k, v in merge_files(params_by_file).items()}
    get_run_logger().info("metrics from %s: %s; %d param(s); plots: %s", ", ".join(metrics_by_file),
                          ", ".join(f"{k}={v:g}" for k, v in sorted(metrics.items())), len(params),
                          ", ".join(plots) or "none")
    return Candidate(metrics=metrics, params=params, plots=plots, metric_files=sorted(metrics_by_file))
