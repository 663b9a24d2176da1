"""What an ML repository declares in ``opsflow-ml.yaml``, and the MLflow tags that tie a run to its code and data.

    model_name: ml-iris            # the registered model (and the MLflow experiment)
    champion_alias: champion
    metrics:                       # the keys compared, as `dvc metrics show` names them (nested keys joined by dots)
      eval.accuracy: {direction: higher, threshold: 0.0}
    command: [python, train.py]    # optional: argv run instead of `dvc repro`
    environment:                   # optional: found when absent (uv.lock, requirements*.txt, pyproject.toml)
      requirements: [requirements.txt]    # or  project: .  (a pyproject.toml with uv.lock)
      python: "3.11"               # optional: the interpreter uv builds the venv with (default: the worker's)
    env: {OMP_NUM_THREADS: "2"}    # optional: plain values the experiment sees (its environment has nothing else)
    model: {path: model.pkl, flavor: sklearn}   # what is logged as the MLflow model (sklearn, pickle or mlflow)
    repro_remote: auto             # give `dvc repro` the DVC remote's credentials: auto, true or false
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from blocks.fields import check_relative_path
from opsflow.core.errors import InvalidInput

FILE = "opsflow-ml.yaml"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Variables the experiment's environment is built from; the repository may not replace them.
RESERVED_ENV = frozenset({"PATH", "HOME", "VIRTUAL_ENV", "TMPDIR", "PYTHONHOME"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricRule(_Strict):
    direction: Literal["higher", "lower"] = "higher"
    threshold: float = 0.0


class EnvironmentDecl(_Strict):
    requirements: list[str] | None = None
    project: str | None = None
    python: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.+=<>@/-]{1,64}$")

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("name at least one requirements file")
            for path in value:
                check_relative_path(path)
        return value

    @field_validator("project")
    @classmethod
    def _project(cls, value: str | None) -> str | None:
        return None if value is None else check_relative_path(value)


class ModelDecl(_Strict):
    path: str = "model.pkl"
    flavor: Literal["sklearn", "pickle", "mlflow"] | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_relative_path(value)


class _File(_Strict):
    model_name: str = Field(min_length=1, max_length=256)
    champion_alias: str = Field(default="champion", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    metrics: dict[str, MetricRule] = Field(min_length=1)
    command: list[str] | None = Field(default=None, min_length=1)
    environment: EnvironmentDecl | Literal["none"] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    model: ModelDecl = Field(default_factory=ModelDecl)
    repro_remote: Literal["auto"] | bool = "auto"

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.fullmatch(name) or name in RESERVED_ENV:
                raise ValueError(f"{name!r} cannot be set: use a variable name other than {sorted(RESERVED_ENV)}")
        return value


@dataclass
class MlConfig:
    model_name: str
    champion_alias: str = "champion"
    metrics: dict[str, dict] = field(default_factory=dict)
    command: list[str] | None = None
    environment: EnvironmentDecl | Literal["none"] | None = None
    env: dict[str, str] = field(default_factory=dict)
    model: ModelDecl = field(default_factory=ModelDecl)
    repro_remote: Literal["auto"] | bool = "auto"


def _where(error: dict) -> str:
    return ".".join(str(p) for p in error["loc"] if not str(p).startswith(("function-after", "literal[")))


def parse_ml_config(text: str) -> MlConfig:
    """The declarations of an ``opsflow-ml.yaml`` text (pure).

    Raises:
        InvalidInput: naming the field that is wrong and what it must be.
    """
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{FILE} is not valid YAML ({exc.__class__.__name__}): fix its syntax") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{FILE} must be a mapping with model_name and metrics")
    if isinstance(raw.get("command"), str):
        raise InvalidInput(f"{FILE}: command must be a list of strings (argv), not a shell string")
    try:
        parsed = _File.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e) or 'file'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"{FILE}: {problems} (see README, MLOps)") from None
    return MlConfig(parsed.model_name, parsed.champion_alias,
                    {k: v.model_dump() for k, v in parsed.metrics.items()}, parsed.command, parsed.environment,
                    parsed.env, parsed.model, parsed.repro_remote)


def load_ml_config(workdir: Path) -> MlConfig:
    """``opsflow-ml.yaml`` of the checkout (see the module docstring).

    Raises:
        InvalidInput: the file is missing or a declaration is wrong (the field is named).
    """
    path = workdir / FILE
    if not path.exists():
        raise InvalidInput(f"the repository has no {FILE}: declare model_name and metrics there")
    return parse_ml_config(path.read_text())


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
