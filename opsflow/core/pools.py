"""Work pools of the worker type ``opsflow``, created with its base job template (its form in the UI).

``opsflow stack up`` and ``opsflow deploy`` both create the pools through :func:`ensure_work_pool`.
The template comes from the worker class Prefect finds for the type ``opsflow`` (the project's
``prefect.collections`` entry point), so this module needs no import of the worker itself, and a
project installed without its entry point fails here, saying so, rather than at the first run.

A pool created by an earlier opsflow as type ``process`` is recreated as type ``opsflow`` when
no run of it is pending or running (a pool's type cannot be changed in place); its deployments and
queues are applied again by ``opsflow deploy``.
"""

from __future__ import annotations

from typing import Any

from opsflow.core.errors import OpsflowError

WORKER_TYPE = "opsflow"


def job_template(worker_type: str = WORKER_TYPE) -> dict[str, Any]:
    """The default base job template of a worker type registered with Prefect."""
    worker_class = worker_class_of(worker_type)
    if worker_class is None:
        raise OpsflowError(f"Prefect knows no worker type {worker_type!r}: the opsflow project's entry point "
                           "(prefect.collections) is not installed; run `uv sync` in the checkout")
    return worker_class.get_default_base_job_template()


def worker_class_of(worker_type: str):
    """The worker class Prefect knows for ``worker_type``, or None. The ``prefect.collections`` entry point named
    after the type is loaded first, alone (opsflow's is): Prefect's own lookup imports every installed collection,
    and prefect-aws, -docker and -kubernetes cost `stack up` and `opsflow apply` 1-2 s of CPU each time. Prefect's
    lookup is the fallback, for a type whose collection names its entry point otherwise."""
    from importlib.metadata import entry_points

    from prefect.utilities.dispatch import get_registry_for_type
    from prefect.workers.base import BaseWorker

    for entry_point in entry_points(group="prefect.collections", name=worker_type):
        try:
            entry_point.load()
        except Exception:  # noqa: BLE001 - a broken entry point: Prefect's lookup below says what it says
            break
        found = (get_registry_for_type(BaseWorker) or {}).get(worker_type)
        if found is not None:
            return found
    return BaseWorker.get_worker_class_from_type(worker_type)


def with_env_defaults(template: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """``template`` whose ``env`` job variable defaults to ``env`` (merged over its own default)."""
    properties = template.get("variables", {}).get("properties", {})
    if "env" in properties:
        properties["env"]["default"] = {**(properties["env"].get("default") or {}), **env}
    return template


def ensure_work_pool(client, name: str, *, description: str, worker_type: str = WORKER_TYPE,
                     template: dict[str, Any] | None = None) -> str:
    """Create pool ``name`` of ``worker_type`` (a sync Prefect client), or recreate one of another type
    when it has no unfinished runs; returns what was done, one line."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    template = template if template is not None else job_template(worker_type)
    create = WorkPoolCreate(name=name, type=worker_type, base_job_template=template, description=description)
    try:
        existing = client.read_work_pool(name)
    except ObjectNotFound:
        client.create_work_pool(create)
        return f"work pool {name} ({worker_type}): created"
    if existing.type == worker_type:
        return f"work pool {name} ({worker_type}): exists"
    busy = _unfinished_runs(client, name)
    if busy:
        return (f"work pool {name}: still type {existing.type}, {busy} of its runs are pending or running; "
                f"run this again when they have finished to recreate it as type {worker_type}")
    client.delete_work_pool(name)
    client.create_work_pool(create)
    return (f"work pool {name}: was type {existing.type}, recreated as type {worker_type} "
            "(its deployments and queues are applied again by `opsflow deploy`)")


def _unfinished_runs(client, pool: str) -> int:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType

    return len(client.read_flow_runs(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
            any_=[StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]))), limit=200))
