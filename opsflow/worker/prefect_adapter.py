"""Every private Prefect name the ``opsflow`` worker touches, in this one module (Prefect 3.8).

The worker is a ``prefect.workers.base.BaseWorker`` subclass and otherwise uses Prefect's public API.
These have no public equivalent:

- ``prefect.engine._drive_run_flow_result``: what ``python -m prefect.engine`` does after
  ``run_flow`` (drives generator and async flows to the end). The forked run process does the same.
- ``BaseWorker._emit_worker_started_event`` / ``_started_event``: ``BaseWorker.start`` emits
  ``prefect.worker.started`` and keeps the event so ``teardown`` emits ``prefect.worker.stopped``
  following it; the opsflow worker has its own ``start`` (event-driven polling) and does the same.
- ``BaseWorker._submitting_flow_run_ids``: the runs being claimed right now. The worker polls again
  only when none is, so a poll never overtakes an in-flight ``Pending`` proposal (the server's
  query skips rows locked by it and would hand out a second run under a pool limit of 1).
- ``BaseJobConfiguration._related_objects``: the deployment ``resolve_for_flow_run`` read, handed
  to the run process so it does not read it again.
- ``BaseWorker._get_scheduled_flow_runs`` / ``_submit_scheduled_flow_runs`` / ``_has_successfully_synced`` /
  ``_last_polled_time``: :func:`get_and_submit_flow_runs` is ``BaseWorker.get_and_submit_flow_runs`` that leaves
  out the runs whose previous process is still ending (a run retried right after it failed): BaseWorker holds a
  ``--limit`` slot per run id until then, and taking a second one for the same id raises.
- ``BaseWorker._give_worker_labels_to_flow_run``: ``BaseWorker`` writes the run's worker labels
  (``prefect.worker.name``/``type``, the pool) and waits for the answer before it starts the run;
  :class:`LabelsBesideTheStart` writes them while the run starts (one round trip less on the way,
  and labels decide nothing about the run).

- ``prefect.flow_engine._send_heartbeats`` (and ``MINIMUM_HEARTBEAT_INTERVAL``): with
  ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` set (the worker sets it, for crash detection), Prefect 3.8's
  heartbeat thread sleeps in steps of 1 s and a sync flow run joins it on its way out, so every run
  ended up to 1 s late (0.5 s on average: measured as the largest part of a GitOps merge run's overhead).
  :func:`prompt_heartbeat_stop` installs the same loop waiting on its stop event instead.

- ``prefect.client.orchestration.ssl``: every ``PrefectClient``/``SyncPrefectClient`` builds a new
  ``ssl.create_default_context(cafile=certifi.where())`` (26 ms of CPU here) and a run opens several before
  its first task. :func:`share_client_tls_contexts` gives that module an ``ssl`` whose verified contexts are
  built once per CA file (in the zygote, so every forked run inherits the one it built); other calls
  (Prefect's insecure mode modifies its context) get a new one as before.

``tests/unit/worker/test_prefect_adapter.py`` checks each of them against the installed Prefect and
fails naming the one that moved.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import types
from typing import Any

from opsflow.core import tls

log = logging.getLogger("opsflow.worker")

#: (module, attribute) pairs this module relies on; the unit test imports each.
PRIVATE_NAMES = (
    ("prefect.engine", "_drive_run_flow_result"),
    ("prefect.workers.base", "BaseWorker._emit_worker_started_event"),
    ("prefect.workers.base", "BaseJobConfiguration.__private_attributes__._related_objects"),
    ("prefect.workers.base", "BaseWorker._give_worker_labels_to_flow_run"),
    ("prefect.workers.base", "BaseWorker._get_scheduled_flow_runs"),
    ("prefect.workers.base", "BaseWorker._submit_scheduled_flow_runs"),
    ("prefect.flow_engine", "_send_heartbeats"),
    ("prefect.flow_engine", "MINIMUM_HEARTBEAT_INTERVAL"),
    ("prefect.flow_engine", "BaseFlowRunEngine._build_heartbeat_event_template"),
    ("prefect.flow_engine", "BaseFlowRunEngine._emit_flow_run_heartbeat"),
    ("prefect.client.orchestration", "ssl.create_default_context"),
)
#: Instance attributes ``BaseWorker.__init__`` sets; the unit test builds a worker and checks them.
WORKER_ATTRIBUTES = ("_started_event", "_submitting_flow_run_ids", "_has_successfully_synced", "_last_polled_time")


def prompt_heartbeat_stop() -> None:
    """Make flow runs in this process stop their heartbeat thread at once when they end.

    ``prefect.flow_engine._send_heartbeats`` as in Prefect 3.8, except that the loop waits on its stop
    event rather than sleeping in 1 s steps, so the sync engine's join returns at once. Idempotent.
    """
    import contextlib
    import contextvars
    import threading

    from prefect import flow_engine

    if getattr(flow_engine._send_heartbeats, "opsflow_prompt", False):
        return

    @contextlib.contextmanager
    def send_heartbeats(engine: Any, join_on_exit: bool = True):
        heartbeat_seconds = engine.heartbeat_seconds
        if heartbeat_seconds is None:
            yield
            return
        heartbeat_seconds = max(heartbeat_seconds, flow_engine.MINIMUM_HEARTBEAT_INTERVAL)
        resource, related = engine._build_heartbeat_event_template()
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                if engine.flow_run and engine.flow_run.state and engine.flow_run.state.is_final():
                    return
                try:
                    engine._emit_flow_run_heartbeat(resource, related)
                except Exception:  # as Prefect: a missed heartbeat is logged, not fatal
                    engine.logger.debug("Failed to emit heartbeat", exc_info=True)
                stop.wait(heartbeat_seconds)

        # The caller's context, so the thread sees the run's settings (as Prefect's own does).
        thread = threading.Thread(target=contextvars.copy_context().run, args=(loop,), daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            if join_on_exit:
                thread.join(timeout=2)

    send_heartbeats.opsflow_prompt = True  # type: ignore[attr-defined]
    flow_engine._send_heartbeats = send_heartbeats


class _SharedVerifiedContexts(types.ModuleType):
    """``ssl`` as ``prefect.client.orchestration`` sees it: ``create_default_context(cafile=...)`` built once per
    CA file (``opsflow.core.tls``). A verified context only holds trust settings; sharing it is safe."""

    def __init__(self) -> None:
        super().__init__("ssl")

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)

    def create_default_context(self, purpose: Any = ssl.Purpose.SERVER_AUTH, *, cafile: str | None = None,
                               capath: str | None = None, cadata: Any = None) -> ssl.SSLContext:
        if not cafile or capath or cadata or purpose != ssl.Purpose.SERVER_AUTH:
            return ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)
        return tls.context_with_cafile(cafile)


def share_client_tls_contexts() -> None:
    """Make Prefect's API clients in this process share one verified TLS context per CA file (and build it
    now, so processes forked from this one inherit it). Idempotent."""
    from prefect.client import orchestration

    if not isinstance(orchestration.ssl, _SharedVerifiedContexts):
        orchestration.ssl = _SharedVerifiedContexts()
    import certifi
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    orchestration.ssl.create_default_context(cafile=PREFECT_API_SSL_CERT_FILE.value() or certifi.where())


def drive_run_flow_result(flow: Any, result: object) -> None:
    """Run what ``run_flow`` returned to its end (generator and async flows), as ``prefect.engine`` does."""
    from prefect.engine import _drive_run_flow_result

    _drive_run_flow_result(flow, result)


async def emit_worker_started(worker: Any) -> None:
    """Emit ``prefect.worker.started`` and remember it, so teardown emits ``prefect.worker.stopped`` after it."""
    worker._started_event = await worker._emit_worker_started_event()


def submitting_ids(worker: Any) -> set:
    """The flow run ids the worker is claiming right now (``Pending`` proposed, process not started yet)."""
    return set(worker._submitting_flow_run_ids)


def submissions_in_flight(worker: Any) -> int:
    """How many runs the worker is claiming right now."""
    return len(worker._submitting_flow_run_ids)


async def get_and_submit_flow_runs(worker: Any, leave_out: set) -> list:
    """``BaseWorker.get_and_submit_flow_runs``, without the runs whose ids are in ``leave_out``."""
    import prefect.types._datetime

    if not worker._has_successfully_synced:
        worker._last_polled_time = prefect.types._datetime.now("UTC")
        return []
    responses = await worker._get_scheduled_flow_runs()
    worker._last_polled_time = prefect.types._datetime.now("UTC")
    return await worker._submit_scheduled_flow_runs(
        flow_run_response=[r for r in responses if r.flow_run.id not in leave_out])


def related_deployment(configuration: Any) -> Any:
    """The deployment Prefect read while resolving ``configuration`` for a run (``None`` if it had none)."""
    return (getattr(configuration, "_related_objects", None) or {}).get("deployment")


class LabelsBesideTheStart:
    """Mixed in before ``BaseWorker``: the run's worker labels are written beside its start, not before it.

    ``settle_labels()`` waits for the writes still under way (before the worker's client closes).
    """

    _label_writes: set

    async def _give_worker_labels_to_flow_run(self, flow_run_id):
        if not hasattr(self, "_label_writes"):
            self._label_writes = set()
        task = asyncio.get_running_loop().create_task(self._write_labels(flow_run_id))
        self._label_writes.add(task)
        task.add_done_callback(self._label_writes.discard)

    async def _write_labels(self, flow_run_id) -> None:
        try:
            await super()._give_worker_labels_to_flow_run(flow_run_id)
        except Exception as exc:  # noqa: BLE001 - labels inform the UI; the run goes on without them
            log.debug("could not label flow run %s: %s", flow_run_id, exc)

    async def settle_labels(self) -> None:
        await asyncio.gather(*getattr(self, "_label_writes", ()), return_exceptions=True)
