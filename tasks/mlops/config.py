"""What an ML repository declares in ``opsflow-ml.yaml``, and the MLflow tags that tie a run to its code and data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from opsflow.core.errors import InvalidInput


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


