"""Creating the flow runs of accepted deliveries, with Prefect's idempotency keys; retrying the ones that failed."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from uuid import UUID

from opsflow.core.errors import RemoteError
from opsflow.core.prefect_api import api_client
from opsflow.core.threads import ContextThreadPool, start_thread
from opsflow.core.waits import describe, retry_sync
from opsflow.webhook.journal import Entry, Journal

log = logging.getLogger("opsflow.webhook")
RETRY_DELAYS_S = (1, 2, 5, 10, 30, 60)
#: How long one attempt to create a delivery's run waits for a slow or restarting API (timeouts and
#: 5xx answers are sent again: the idempotency key makes a second create return the first run).
#: After that the delivery stays in the journal and the retry thread tries again later.
CREATE_DEADLINE_S = 60.0
# Runs are created by a small pool: a SQLite-backed Prefect server serializes writes anyway, and
# many more concurrent creates only turn into "database is locked" 503s.
CREATE_CONCURRENCY = 4


class Dispatcher:
    """Starts deployment runs through one shared Prefect client (httpx clients are thread-safe, and
    making one costs tens of milliseconds); deployment ids are cached by name."""

    def __init__(self, journal: Journal):
        self.journal = journal
        self._client_obj = None
        self._client_lock = threading.Lock()
        self._ids: dict[str, UUID] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ContextThreadPool(CREATE_CONCURRENCY, thread_name_prefix="webhook-create")
        # Deliveries whose run is being created: a redelivery waits on the same future, and the
        # retry thread leaves them alone, so no create is sent twice for one delivery.
        self._inflight: dict[tuple[str, str], Future] = {}
        self._inflight_lock = threading.Lock()

    def _client(self):
        """One httpx client for the Prefect REST API (opsflow.core.prefect_api: Prefect's own client sleeps
        2 s on a 503 even when told not to retry; the dispatcher retries those itself, sooner)."""
        with self._client_lock:
            if self._client_obj is None:
                self._client_obj = api_client(timeout=10)
            return self._client_obj

    def _deployment_id(self, name: str) -> UUID:
        if name not in self._ids:
            def read() -> UUID:
                resp = self._client().get(f"deployments/name/{name}")
                if resp.status_code == 404:
                    raise RemoteError(f"deployment {name} does not exist; apply them with `opsflow deploy`")
                resp.raise_for_status()
                return UUID(resp.json()["id"])

            self._ids[name] = retry_sync(read, what=f"reading deployment {name}", deadline_s=CREATE_DEADLINE_S,
                                         on_retry=self._log_retry(f"reading deployment {name}"), stop=self._stop)
        return self._ids[name]

    @staticmethod
    def _log_retry(what: str):
        told: list[bool] = []

        def on_retry(exc: BaseException, pause: float) -> None:
            if not told:
                log.warning("%s: the Prefect API did not answer (%s); trying again for up to %.0f s", what,
                            describe(exc), CREATE_DEADLINE_S)
                told.append(True)

        return on_retry

    def dispatch(self, entry: Entry, tags: list[str]) -> str:
        """Create (or find, by idempotency key) the entry's flow run; record it; return its id.

        Raises:
            RemoteError: the Prefect API is unreachable or the deployment is missing (the entry
                stays in the journal and is retried).
        """
        if entry.flow_run_id:
            return entry.flow_run_id
        try:
            run = self._create(entry, tags)
        except RemoteError as exc:
            self.journal.failed(entry.forge, entry.delivery, str(exc))
            self._wake.set()
            raise
        except Exception as exc:  # noqa: BLE001 - httpx/Prefect errors: the API is down or refused
            self.journal.failed(entry.forge, entry.delivery, type(exc).__name__)
            self._ids.pop(entry.deployment, None)
            self._wake.set()
            raise RemoteError(f"the Prefect API did not create the run of {entry.deployment}: "
                              f"{type(exc).__name__}; the delivery is recorded and will be retried") from None
        self.journal.dispatched(entry.forge, entry.delivery, str(run))
        self._emit(entry, str(run))
        return str(run)

    def dispatch_within(self, entry: Entry, tags: list[str], budget_s: float) -> str | None:
        """Like ``dispatch``, but waits at most ``budget_s``: the run id, or None when the run is still
        being created (it goes on in the background) or the API failed (the retry thread has it)."""
        if entry.flow_run_id:
            return entry.flow_run_id
        key = (entry.forge, entry.delivery)
        with self._inflight_lock:
            future = self._inflight.get(key)
            if future is None:
                future = self._inflight[key] = self._pool.submit(self._dispatch_logged, entry, tags)
        try:
            return future.result(timeout=budget_s)
        except FutureTimeout:
            return None

    def _dispatch_logged(self, entry: Entry, tags: list[str]) -> str | None:
        try:
            return self.dispatch(entry, tags)
        except RemoteError as exc:
            log.warning("delivery %s not started yet: %s", entry.delivery, exc)
            return None
        finally:
            with self._inflight_lock:
                self._inflight.pop((entry.forge, entry.delivery), None)

    def _in_flight(self, entry: Entry) -> bool:
        with self._inflight_lock:
            return (entry.forge, entry.delivery) in self._inflight

    def _create(self, entry: Entry, tags: list[str]) -> UUID:
        """Create the run (POST /deployments/{id}/create_flow_run, as Prefect's client does), sending it again
        after a timeout or a 5xx until ``CREATE_DEADLINE_S`` (or the receiver stops): the idempotency key makes
        that safe.

        Raises:
            RemoteUnavailable: the API did not answer within the deadline (the message says what was waited for).
        """
        from prefect.client.schemas.actions import DeploymentFlowRunCreate
        from prefect.states import Scheduled, to_state_create

        create = DeploymentFlowRunCreate(parameters=entry.parameters, state=to_state_create(Scheduled()), tags=tags,
                                         idempotency_key=entry.idempotency_key)
        body = create.model_dump(mode="json", exclude_unset=True)
        path = f"deployments/{self._deployment_id(entry.deployment)}/create_flow_run"

        def post() -> UUID:
            resp = self._client().post(path, json=body)
            resp.raise_for_status()
            return UUID(resp.json()["id"])

        what = f"creating the run of delivery {entry.delivery} ({entry.deployment})"
        return retry_sync(post, what=what, deadline_s=CREATE_DEADLINE_S, on_retry=self._log_retry(what),
                          stop=self._stop)

    def _emit(self, entry: Entry, run_id: str) -> None:
        from prefect.events import emit_event

        try:
            emit_event(
                event="opsflow.webhook.accepted",
                resource={"prefect.resource.id": f"opsflow.webhook.delivery.{entry.delivery}",
                          "prefect.resource.name": entry.delivery},
                related=[{"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.role": "flow-run"}],
                payload={"forge": entry.forge, "event": entry.event, "deployment": entry.deployment,
                         "app": entry.parameters.get("app"), "sha": entry.parameters.get("sha")},
            )
        except Exception:  # noqa: BLE001 - an event is a notification; the run exists either way
            log.warning("could not emit the accepted event of delivery %s", entry.delivery)

    def start(self) -> None:
        self._thread = start_thread(self._retry_loop, name="webhook-retry")
        self._wake.set()  # dispatch what a previous process recorded but did not start

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        # Creates under way finish; queued ones are dropped here and stay pending in the journal.
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._client_obj is not None:
            self._client_obj.close()

    def _retry_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)] if failures else 30)
            self._wake.clear()
            if self._stop.is_set():
                return
            pending = self.journal.pending()
            ok = True
            for entry in pending:
                if self._in_flight(entry):
                    continue
                try:
                    run_id = self.dispatch(entry, tags=["webhook", entry.forge, "redelivered"])
                    log.info("started recorded delivery %s: flow run %s", entry.delivery, run_id)
                except RemoteError as exc:
                    log.warning("delivery %s still not started: %s", entry.delivery, exc)
                    ok = False
                    break
            failures = 0 if ok else failures + 1
