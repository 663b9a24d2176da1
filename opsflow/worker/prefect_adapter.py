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
  ``--limit`` slot per run id until then, and taking a second one for the same id raises. The worker's
  ``prefetch_seconds`` is its poll interval: of the runs the server returns, only those due now are claimed, and
  the earliest of the others tells the worker when to wake.
- ``BaseWorker._give_worker_labels_to_flow_run``: ``BaseWorker`` writes the run's worker labels
  (``prefect.worker.name``/``type``, the pool) and waits for the answer before it starts the run;
  :class:`LabelsAfterTheFork` writes them once the run's process is forked (one round trip less on the way,
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

- ``BaseJobConfiguration._base_environment``: Prefect's settings as environment variables, written into every
  run's job configuration between the claim and the fork. Serialising the settings takes 40-60 ms of CPU on a
  quiet 2-core machine (0.4 s on a busy one), the largest part of the worker's own time on the way to a run's
  start. :class:`SettingsEnvironmentOnce` computes it once per settings object (:func:`settings_environment`;
  the zygote's environment is written from the same answer).

In a run's process (forked from the zygote), what the worker already knows and reads the engine will make,
started before it needs them (:func:`prepare_run_process`):

- ``prefect._internal.version_checking._API_VERSION_CHECK_CACHE`` / ``_cache_api_version_check``: every new
  client and event subscriber of a process asks the server's version once per API URL (a round trip each, two
  before ``Running``). The worker's process has passed those checks against the same server with the same
  Prefect; its runs start with them passed (:func:`api_versions_checked`).
- ``PrefectHttpxAsyncClient.enable_csrf_support``: each new client asks the server for a CSRF token before its
  first change (a round trip before ``Running``, another for the run's event client). A server without CSRF
  protection answers that it has none, and the client stops asking. When the worker's client got that answer
  (:func:`server_without_csrf`), its zygote runs with ``PREFECT_CLIENT_CSRF_SUPPORT_ENABLED=false`` (the
  worker's own client does not ask again either; a server restarted with CSRF protection needs the worker
  restarted, as it always did).
- ``prefect.results._read_server_default_result_storage_block_id`` (and the async twin): Prefect 3.8 reads the
  server's default result storage from the API each time it sets up a result store: three round trips between
  the claim and the flow's first line. A run's process reads it once, in the background from its start, and
  answers the later calls from that read (a failed read is not remembered: Prefect's own function runs then).
- ``prefect.events.related.RESOURCE_CACHE``: the run's first event (``Running``) names its flow, deployment,
  work queue and work pool, and Prefect reads each from the API for it (four requests at once, beside the flow's
  first block read: 45-60 ms each, and the block read 56-69 ms instead of 30-40, traced on the local stack). The
  worker has all four (:func:`related_objects`); the run's process puts them in that cache
  (:func:`seed_related_objects`), keyed as Prefect's ``_get_and_cache_related_object`` keys them.
- ``prefect.flow_engine.observe_flow_run_suspension``: before ``Running`` the engine starts an observer of
  the run's suspension (a thread, an event-stream subscription, a read of the run) and waits until it is ready:
  100-300 ms on the way to ``Running``. The run's process starts Prefect's own observer as it starts, beside
  loading the flow and the engine's first requests; the engine then takes that one (still waiting until it is
  ready, and handing it whatever suspension it already saw).

``tests/unit/worker/test_prefect_adapter.py`` checks each of them against the installed Prefect and
fails naming the one that moved.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import ssl
import threading
import time
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
    ("prefect.workers.base", "BaseJobConfiguration._base_environment"),
    ("prefect._internal.version_checking", "_API_VERSION_CHECK_CACHE"),
    ("prefect._internal.version_checking", "_API_VERSION_CHECK_CACHE_LOCK"),
    ("prefect._internal.version_checking", "_cache_api_version_check"),
    ("prefect.results", "_read_server_default_result_storage_block_id"),
    ("prefect.results", "_aread_server_default_result_storage_block_id"),
    ("prefect.flow_engine", "observe_flow_run_suspension"),
    ("prefect.events.related", "RESOURCE_CACHE"),
    ("prefect._flow_run_suspension", "FlowRunSuspensionRequest"),
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


async def get_and_submit_flow_runs(worker: Any, leave_out: set) -> tuple[list, Any]:
    """``BaseWorker.get_and_submit_flow_runs``, without the runs whose ids are in ``leave_out`` and those not yet due.

    The server returns the runs scheduled up to the worker's ``prefetch_seconds`` from now; only those due now
    are claimed. Returns the runs submitted and the scheduled time of the earliest run not yet due (``None``:
    none returned).
    """
    import prefect.types._datetime

    if not worker._has_successfully_synced:
        worker._last_polled_time = prefect.types._datetime.now("UTC")
        return [], None
    now = prefect.types._datetime.now("UTC")
    responses = await worker._get_scheduled_flow_runs()
    worker._last_polled_time = prefect.types._datetime.now("UTC")
    due, later = [], []
    for response in responses:
        when = scheduled_time(response.flow_run)
        if when is not None and when > now:
            later.append(when)
        elif response.flow_run.id not in leave_out:
            due.append(response)
    return await worker._submit_scheduled_flow_runs(flow_run_response=due), min(later, default=None)


def scheduled_time(flow_run: Any) -> Any:
    """When a scheduled run is due (``None`` when its state says nothing)."""
    details = getattr(flow_run.state, "state_details", None) if flow_run.state else None
    return getattr(details, "scheduled_time", None) or flow_run.next_scheduled_start_time


def _resolved(configuration: Any, kind: str) -> Any:
    """The object of ``kind`` Prefect read while resolving ``configuration`` for a run (``None`` if none)."""
    return (getattr(configuration, "_related_objects", None) or {}).get(kind)


def related_deployment(configuration: Any) -> Any:
    """The deployment Prefect read while resolving ``configuration`` for a run (``None`` if it had none)."""
    return _resolved(configuration, "deployment")


def related_objects(configuration: Any, work_pool: Any, flow_run: Any) -> list[dict]:
    """The run's flow, work pool and work queue as Prefect's events name them, for the run's process (JSON).

    The flow is the one Prefect read while resolving ``configuration``; the pool is the worker's own; the queue
    is the run's (its id and name, all an event's related resource holds). The deployment travels on its own."""
    from prefect.client.schemas.objects import WorkQueue

    found = []
    flow = _resolved(configuration, "flow")
    if flow is not None and flow.id == flow_run.flow_id:
        found.append({"kind": "flow", "object": flow.model_dump(mode="json")})
    if work_pool is not None and flow_run.work_pool_name in (None, work_pool.name):  # the claim's answer has no name
        found.append({"kind": "work-pool", "object": work_pool.model_dump(mode="json", exclude_none=True)})
        if flow_run.work_queue_id and flow_run.work_queue_name:
            queue = WorkQueue(id=flow_run.work_queue_id, name=flow_run.work_queue_name, work_pool_id=work_pool.id)
            found.append({"kind": "work-queue", "object": queue.model_dump(mode="json")})
    return found


class LabelsAfterTheFork:
    """Mixed in before ``BaseWorker``: the run's worker labels are written once its process is forked.

    ``BaseWorker`` writes them, and waits for the answer, before it proposes ``Submitting`` and starts the run.
    Written beside that proposal, the two requests split the server's time and the fork waited for both
    (``Submitting`` 34-44 ms alone, 74 ms beside the labels, traced on the local stack); after the fork they
    overlap the run process's own start (loading its flow), which asks the server for little.

    Not its ``Submitting`` state: the server lets a run that ended (Failed, Crashed, or Completed without a
    persisted result) go back to a ``PENDING`` state, so a ``Submitting`` landing after a quick end (a bad
    parameter, a process that died at once, a short flow) would reopen the run. ``BaseWorker`` waits for it.

    The worker calls :meth:`write_labels` once the run's process is forked (or failed to be); a run whose
    ``Submitting`` was refused never gets there, and is forgotten after ``LABELS_FORGOTTEN_S``.
    ``settle_labels()`` waits for the writes still under way (before the worker's client closes).
    """

    LABELS_FORGOTTEN_S = 300.0
    _label_writes: set
    _labels_due: dict

    def _due(self) -> dict:
        if not hasattr(self, "_labels_due"):
            self._labels_due = {}
        return self._labels_due

    async def _give_worker_labels_to_flow_run(self, flow_run_id):
        due, now = self._due(), time.monotonic()
        for stale in [k for k, since in due.items() if now - since > self.LABELS_FORGOTTEN_S]:
            del due[stale]
        due[flow_run_id] = now

    def write_labels(self, flow_run_id) -> None:
        """Start writing the run's worker labels (once; nothing when BaseWorker did not ask for them)."""
        if self._due().pop(flow_run_id, None) is None:
            return
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


_settings_environment: tuple[Any, dict[str, str]] | None = None
_settings_environment_lock = threading.Lock()


def settings_environment() -> dict[str, str]:
    """``get_current_settings().to_environment_variables(exclude_unset=True)``, computed once per settings object."""
    global _settings_environment  # noqa: PLW0603 - a one-entry cache, like Prefect's own settings context
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    with _settings_environment_lock:
        cached = _settings_environment
        if cached is None or cached[0] is not settings:
            cached = _settings_environment = (settings, settings.to_environment_variables(exclude_unset=True))
    return dict(cached[1])


class SettingsEnvironmentOnce:
    """Mixed in before ``BaseJobConfiguration``: its settings environment from :func:`settings_environment`."""

    @classmethod
    def _base_environment(cls) -> dict[str, str]:
        return settings_environment()


# --- in a run's process ---------------------------------------------------------------------------


def seed_related_objects(flow_run: Any, deployment: Any, found: list[dict] | None) -> None:
    """Put what the worker knows of the run's related objects (:func:`related_objects`, and the deployment) in
    Prefect's cache of them, so the run's first event reads none of them from the API."""
    import prefect.types._datetime
    from prefect.client.schemas.objects import Flow, WorkPool, WorkQueue
    from prefect.events import related
    from pydantic import ValidationError

    keys = {"flow": flow_run.flow_id, "work-queue": flow_run.work_queue_id, "deployment": flow_run.deployment_id}
    models = {"flow": Flow, "work-pool": WorkPool, "work-queue": WorkQueue}
    objects = [("deployment", deployment)] if deployment is not None else []
    for entry in found or ():
        try:
            objects.append((entry["kind"], models[entry["kind"]].model_validate(entry["object"])))
        except (KeyError, TypeError, ValidationError):
            continue  # Prefect reads that one itself
    now = prefect.types._datetime.now("UTC")
    for kind, obj in objects:
        key = obj.name if kind == "work-pool" else keys.get(kind)  # Prefect reads a pool by its name
        if key is not None:
            related.RESOURCE_CACHE[f"{kind}.{key}"] = ({"kind": kind, "object": obj}, now)


def api_versions_checked() -> list[list[str]]:
    """The ``[API URL, Prefect version]`` pairs whose server version check passed in this process (the worker)."""
    from prefect._internal import version_checking

    with version_checking._API_VERSION_CHECK_CACHE_LOCK:
        return [list(key) for key in sorted(version_checking._API_VERSION_CHECK_CACHE)]


def server_without_csrf(client: Any) -> bool:
    """True when this Prefect client (the worker's, after its first change request) learned that the server has no
    CSRF protection, so it sends no token."""
    http = getattr(client, "_client", None)
    return getattr(http, "enable_csrf_support", True) is False


def remember_api_versions_checked(pairs: list[list[str]] | None) -> None:
    """Record the worker's passed version checks in this process (same Prefect: the run was forked from it)."""
    from prefect._internal.version_checking import _cache_api_version_check

    for api_url, version in pairs or ():
        _cache_api_version_check((str(api_url), str(version)))


class _ServerResultStorage:
    """The server's default result storage (a block id or None), read once per API URL in this process."""

    def __init__(self, read, aread, fetch=None) -> None:
        self._read, self._aread = read, aread  # Prefect's own functions: they log and answer None on a failure
        self._fetch = fetch or _fetch_server_result_storage  # raises on a failure
        self._lock = threading.Lock()
        self._reads: dict[str, concurrent.futures.Future] = {}

    @staticmethod
    def _api_url() -> str:
        from prefect.settings import PREFECT_API_URL

        return str(PREFECT_API_URL.value() or "")

    def read(self) -> Any:
        url = self._api_url()
        with self._lock:
            read = self._reads.get(url)
            mine = read is None
            if mine:
                read = self._reads[url] = concurrent.futures.Future()
        if not mine:
            try:
                return read.result()
            except Exception:  # noqa: BLE001 - that read failed; Prefect's function reads (and logs) again
                return self._read()
        try:
            block_id = self._fetch()
        except Exception as exc:  # noqa: BLE001 - not remembered: later calls read again
            with self._lock:
                self._reads.pop(url, None)
            read.set_exception(exc)
            return self._read()
        read.set_result(block_id)
        return block_id

    async def aread(self) -> Any:
        with self._lock:
            read = self._reads.get(self._api_url())
        if read is not None and read.done() and read.exception() is None:
            return read.result()
        return await self._aread()


def _fetch_server_result_storage() -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # the run's client when there is one (re-entrant)
        return client.read_server_default_result_storage().default_result_storage_block_id


def remember_server_result_storage() -> None:
    """Read the server's default result storage once in this process, starting now in the background (with
    the caller's settings); Prefect's later reads are answered from it. Idempotent."""
    from prefect import results

    from opsflow.core.threads import start_thread

    memo = getattr(results._read_server_default_result_storage_block_id, "opsflow_memo", None)
    if memo is None:
        memo = _ServerResultStorage(results._read_server_default_result_storage_block_id,
                                    results._aread_server_default_result_storage_block_id)
        read, aread = memo.read, memo.aread

        async def aread_memo():
            return await aread()

        def read_memo():
            return read()

        read_memo.opsflow_memo = aread_memo.opsflow_memo = memo  # type: ignore[attr-defined]
        results._read_server_default_result_storage_block_id = read_memo
        results._aread_server_default_result_storage_block_id = aread_memo
    start_thread(memo.read, name="read-result-storage")


class _EarlySuspensionObserver:
    """Prefect's ``observe_flow_run_suspension`` for one flow run, entered in a thread before the engine asks."""

    def __init__(self, original, flow_run_id) -> None:
        from prefect._flow_run_suspension import FlowRunSuspensionRequest

        self.flow_run_id = flow_run_id
        self.request = FlowRunSuspensionRequest()  # what it sees before the engine's request is registered
        self.entered = threading.Event()
        self.taken = False
        self._context = original(flow_run_id, self.request)
        self._error: BaseException | None = None
        self._closed = False

    def enter(self) -> None:
        try:
            self._context.__enter__()
        except BaseException as exc:  # noqa: BLE001 - the engine then starts its own observer
            self._error = exc
        finally:
            self.entered.set()

    def take(self, suspension_request) -> bool:
        """Wait until it is ready; hand the engine's request what it saw. False: it failed, start another."""
        self.taken = True
        self.entered.wait()
        if self._error is not None:
            return False
        if (state := self.request.get_state()) is not None:
            suspension_request.mark_requested(state)
        return True

    def close(self) -> None:
        """Stop it (the engine's exit does; the run's process does when the engine never took it). Idempotent."""
        self.entered.wait()
        if self._error is None and not self._closed:
            self._closed = True
            self._context.__exit__(None, None, None)


def start_suspension_observer(flow_run_id) -> _EarlySuspensionObserver:
    """Start Prefect's suspension observer of ``flow_run_id`` now, in the background; the flow engine takes it
    instead of starting its own (see the module docstring). Call once per process, before ``run_flow``; close
    what it returns when the run is over."""
    from prefect import flow_engine

    from opsflow.core.threads import start_thread

    original = getattr(flow_engine.observe_flow_run_suspension, "opsflow_original",
                       flow_engine.observe_flow_run_suspension)
    early = _EarlySuspensionObserver(original, flow_run_id)

    @contextlib.contextmanager
    def observe_flow_run_suspension(run_id, suspension_request, polling_interval: float = 10):
        if run_id != early.flow_run_id or early.taken or polling_interval != 10 or not early.take(suspension_request):
            with original(run_id, suspension_request, polling_interval) as observed:
                yield observed
            return
        try:
            yield
        finally:
            early.close()

    observe_flow_run_suspension.opsflow_original = original  # type: ignore[attr-defined]
    flow_engine.observe_flow_run_suspension = observe_flow_run_suspension
    start_thread(early.enter, name="suspension-observer")
    return early
