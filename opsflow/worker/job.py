"""The ``opsflow`` worker type's job configuration: what a platform engineer sets per pool or per deployment.

A work pool of type ``opsflow`` carries the base job template built from these two models
(``OpsflowWorker.get_default_base_job_template()``): :class:`OpsflowVariables` is the form the
Prefect UI shows for the pool (Work Pools → the pool → Edit) and the schema every deployment's
and flow run's ``job_variables`` are validated against when they are applied. The schema allows
no other keys, so a misspelt job variable (``run_timout``) is rejected by the server with the key
named, instead of being ignored until a run misbehaves. :class:`OpsflowJobConfiguration` is what
the worker receives for one run, the pool's defaults merged with the deployment's and the run's
values by Prefect (``BaseJobConfiguration.from_template_and_values``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.workers.base import BaseJobConfiguration, BaseWorkerResult
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from opsflow.worker import prefect_adapter

_ENV = {"title": "Environment variables",
        "description": "Set in the run's process (a null value unsets the variable). The pool's values come first, "
                       "then the deployment's, then the run's, key by key."}
_WORKDIR_ROOT = {"title": "Working directory root",
                 "description": "Each run gets a fresh directory under this one, removed when the run's process "
                                "ends (crashes included). Empty: the worker's --workdir-root, else the system's "
                                "temporary directory."}
_STREAM = {"title": "Stream output",
           "description": "Copy the run's stdout and stderr to the worker's output (its journal). The run's Prefect "
                          "logs reach the UI either way."}
_TIMEOUT = {"title": "Run timeout (seconds)",
            "description": "A run still running after this many seconds has its process group killed and ends "
                           "Failed (TimedOut). Empty: no limit."}


def _absolute(value: Path | str | None) -> Path | None:
    if value in (None, ""):
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ValueError(f"working_dir_root must be an absolute path, got {str(value)!r}")
    return path


class OpsflowVariables(BaseModel):
    """The job variables of an opsflow work pool: its form in the UI. No other keys are accepted."""

    model_config = ConfigDict(extra="forbid")

    env: dict[str, str | None] = Field(default_factory=dict, **_ENV)
    working_dir_root: Path | None = Field(default=None, **_WORKDIR_ROOT)
    stream_output: bool = Field(default=True, **_STREAM)
    run_timeout: int | None = Field(default=None, ge=1, **_TIMEOUT)

    @field_validator("working_dir_root", mode="before")
    @classmethod
    def _check_root(cls, value: Path | str | None) -> Path | None:
        return _absolute(value)

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Pydantic's schema, shaped as Prefect's ``BaseVariables`` shapes it, but keeping
        ``additionalProperties: false``, which is what makes the server refuse unknown job variables."""
        schema = super().model_json_schema(*args, **kwargs)
        if "$defs" in schema:
            schema["definitions"] = schema.pop("$defs")
        schema["additionalProperties"] = False
        return schema


class OpsflowJobConfiguration(prefect_adapter.SettingsEnvironmentOnce, BaseJobConfiguration):
    """One run's configuration, as the worker receives it (``env``, ``labels``, ``name``, ``command``
    come from Prefect's ``BaseJobConfiguration``; ``command`` is not used: runs are forked, not executed).
    Prefect's settings are serialised into ``env`` once per settings object, not once per run (prefect_adapter)."""

    working_dir_root: Path | None = Field(default=None, **_WORKDIR_ROOT)
    stream_output: bool = Field(default=True, **_STREAM)
    run_timeout: int | None = Field(default=None, ge=1, **_TIMEOUT)

    _unset_env: list[str] = PrivateAttr(default_factory=list)

    @classmethod
    def json_template(cls) -> dict[str, Any]:
        """``{field: "{{ field }}"}`` for the fields the pool's variables define (not ``command``, ``name``,
        ``labels``: the server refuses a template that uses variables its schema does not declare)."""
        template = super().json_template()
        return {key: value for key, value in template.items() if key in OpsflowVariables.model_fields}

    @field_validator("working_dir_root", mode="before")
    @classmethod
    def _check_root(cls, value: Path | str | None) -> Path | None:
        return _absolute(value)

    def prepare_for_flow_run(self, flow_run, deployment=None, flow=None, work_pool=None, worker_name=None,
                             worker_id=None) -> None:
        """Prefect's preparation (settings, run ids and labels into ``env``/``labels``), remembering the
        variables the job variables set to null: Prefect drops them, opsflow unsets them in the run."""
        self._unset_env = sorted(key for key, value in (self.env or {}).items() if value is None)
        super().prepare_for_flow_run(flow_run, deployment, flow, work_pool, worker_name, worker_id)

    def run_environment(self, defaults: dict[str, str] | None = None) -> dict[str, str | None]:
        """What the run's process applies to its environment: ``defaults`` (unless set), the prepared
        ``env``, and ``None`` (unset) for each variable the job variables set to null."""
        env: dict[str, str | None] = {**(defaults or {}), **self.env}
        env.update(dict.fromkeys(self._unset_env))
        return env


class OpsflowWorkerResult(BaseWorkerResult):
    """How a run's process ended: ``identifier`` is ``host:pid``, ``status_code`` its exit code
    (negative: killed by that signal)."""
