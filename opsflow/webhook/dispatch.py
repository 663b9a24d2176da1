"""Creating the flow runs of recorded deliveries with Prefect idempotency keys; retrying the ones that failed.

Prefect deduplicates ``create_flow_run_from_deployment`` on (flow, idempotency key): the server
inserts with ON CONFLICT DO NOTHING on that unique index and returns the existing run (answering
200 instead of 201). So a redelivery, a retry after a lost answer, a restart that re-sends what
was pending, and the push of a merge commit whose merged PR was already accepted all end at the
same run.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from uuid import UUID

from opsflow.errors import RemoteError
from opsflow.webhook.journal import Entry, Journal

log = logging.getLogger("opsflow.webhook")
RETRY_DELAYS_S = (1, 2, 5, 10, 30, 60)
IDLE_CHECK_S = 30.0
# A 5xx from the server (SQLite busy under load) is retried in place this many times before the
# delivery is left to the retry thread.
SERVER_BUSY_RETRIES_S = (0.05, 0.2, 0.5)


class DeploymentMissing(RemoteError):
    """The target deployment does not exist (yet): the delivery waits for it."""


class ApiUnreachable(RemoteError):
    """The Prefect API did not answer: the delivery waits for it."""


def run_tags(entry: Entry) -> list[str]:
    """Tags of a delivery's run: ``webhook``, the forge and the event (``merge-request-hook`` for GitLab's)."""
    return ["webhook", entry.forge, entry.event.strip().lower().replace(" ", "-")]


def _default_client():
    from prefect.client.orchestration import get_client

    client = get_client(sync_client=True)
    client.__enter__()
    return client


def _http_error(exc) -> str:
    """A storable description of an HTTP error: status and the server's detail, never the URL."""
    try:
        detail = exc.response.json().get("detail")
    except Exception:  # noqa: BLE001 - not JSON: the status says enough
        detail = None
    return f"HTTP {exc.response.status_code}" + (f": {str(detail)[:300]}" if detail else "")


class Dispatcher:
    """Creates runs on a small thread pool through one shared Prefect client (httpx clients are
    thread-safe, and making one costs tens of milliseconds); deployment ids are cached by name.

    ``submit`` returns a future per delivery (the same one while that delivery is in flight), so a
    request can wait for its run as long as its answer budget allows and leave the rest to the pool.
    """

    def __init__(self, journal: Journal, client_factory=_default_client, workers: int = 4):
        self.journal = journal
        self._client_factory = client_factory
        self._client_obj = None
        self._client_lock = threading.Lock()
        self._ids: dict[str, UUID] = {}
        self._inflight: dict[tuple[str, str], Future] = {}
        self._inflight_lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook-create")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._retry_loop, name="webhook-retry", daemon=True)
        self.api_down = False  # set by a transport error, cleared by the next success

    def client(self):
        """The shared sync Prefect client (created on first use)."""
        with self._client_lock:
            if self._client_obj is None:
                self._client_obj = self._client_factory()
            return self._client_obj

    def submit(self, entry: Entry) -> Future:
        """Start creating the entry's run (or join the attempt already under way); the future gives the run id.

        The future raises ``DeploymentMissing``/``ApiUnreachable``/``RemoteError`` when the attempt
        failed; the entry then stays pending in the journal and the retry thread tries again.
        """
        key = (entry.forge, entry.delivery)
        with self._inflight_lock:
            future = self._inflight.get(key)
            if future is None:
                future = self._pool.submit(self._dispatch, entry)
                self._inflight[key] = future
                future.add_done_callback(lambda done, key=key: self._forget(key, done))
            return future

    def _forget(self, key: tuple[str, str], future: Future) -> None:
        with self._inflight_lock:
            if self._inflight.get(key) is future:
                del self._inflight[key]

    def _in_flight(self, entry: Entry) -> bool:
        with self._inflight_lock:
            return (entry.forge, entry.delivery) in self._inflight

    def _dispatch(self, entry: Entry) -> str:
        current = self.journal.get(entry.forge, entry.delivery)
        if current is not None and current.flow_run_id:
            return current.flow_run_id
        try:
            run = self._create(entry)
        except RemoteError as exc:
            self.journal.failed(entry.forge, entry.delivery, str(exc))
            self._wake.set()
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the client could not be built; keep the delivery
            self.journal.failed(entry.forge, entry.delivery, type(exc).__name__)
            self._wake.set()
            raise RemoteError(f"the run of {entry.deployment} was not created ({type(exc).__name__}); the "
                              "delivery is recorded and will be retried") from None
        self.api_down = False
        run_id = str(run.id)
        self.journal.dispatched(entry.forge, entry.delivery, run_id)
        self._emit(entry, run_id, run.deployment_id)
        return run_id

    def warm(self, deployments: list[str]) -> None:
        """Create the client and look up these deployments' ids now; missing ones are looked up again later."""
        for name in deployments:
            try:
                self._deployment_id(name)
            except DeploymentMissing:
                log.info("deployment %s does not exist (yet); deliveries for it wait until it does", name)
            except Exception as exc:  # noqa: BLE001 - the API is down: the deliveries will find out
                log.warning("could not look up deployment %s: %s", name, type(exc).__name__)

    def _deployment_id(self, name: str, fresh: bool = False) -> UUID:
        if fresh or name not in self._ids:
            from prefect.exceptions import ObjectNotFound

            try:
                self._ids[name] = self.client().read_deployment_by_name(name).id
            except ObjectNotFound:
                self._ids.pop(name, None)
                raise DeploymentMissing(f"deployment {name} does not exist; apply it with `opsflow deploy`; "
                                        "the delivery is recorded and will be started once it exists") from None
        return self._ids[name]

    def _create(self, entry: Entry):
        """The run, created or found by its idempotency key; Prefect and httpx errors become RemoteErrors."""
        import httpx
        from prefect.exceptions import PrefectHTTPStatusError

        fresh = False
        for attempt in range(len(SERVER_BUSY_RETRIES_S) + 1):
            try:
                return self.client().create_flow_run_from_deployment(
                    self._deployment_id(entry.deployment, fresh), parameters=entry.parameters,
                    idempotency_key=entry.idempotency_key, tags=run_tags(entry))
            except PrefectHTTPStatusError as exc:
                status = exc.response.status_code
                if status == 404 and not fresh:  # the cached deployment id is stale (re-created deployment)
                    fresh = True
                    continue
                if status >= 500 and attempt < len(SERVER_BUSY_RETRIES_S):
                    time.sleep(SERVER_BUSY_RETRIES_S[attempt])
                    continue
                if status in (502, 503, 504):
                    self.api_down = True
                raise RemoteError(f"the Prefect API refused the run of {entry.deployment}: {_http_error(exc)}; "
                                  "the delivery is recorded and will be retried") from None
            except (httpx.TransportError, OSError) as exc:
                self.api_down = True
                raise ApiUnreachable(f"the Prefect API is unreachable ({type(exc).__name__}); the delivery is "
                                     "recorded and will be started when it answers") from None
        raise AssertionError("unreachable")

    def _emit(self, entry: Entry, run_id: str, deployment_id: UUID | None) -> None:
        """The ``opsflow.webhook.accepted`` event, related to the run (and its deployment) for automations."""
        from prefect.events import emit_event

        related = [{"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.role": "flow-run"}]
        if deployment_id:
            related.append({"prefect.resource.id": f"prefect.deployment.{deployment_id}",
                            "prefect.resource.role": "deployment", "prefect.resource.name": entry.deployment})
        try:
            emit_event(
                event="opsflow.webhook.accepted",
                resource={"prefect.resource.id": f"opsflow.webhook.delivery.{entry.delivery}",
                          "prefect.resource.name": entry.delivery, "opsflow.forge": entry.forge},
                related=related,
                payload={"forge": entry.forge, "event": entry.event, "repo": entry.repo,
                         "deployment": entry.deployment, "app": entry.parameters.get("app"),
                         "sha": entry.parameters.get("sha"), "flow_run_id": run_id},
            )
        except Exception:  # noqa: BLE001 - an event is a notification; the run exists either way
            log.warning("could not emit the accepted event of delivery %s", entry.delivery)

    def start(self) -> None:
        """Start the retry thread; its first round dispatches what a previous process recorded but did not start."""
        self._thread.start()
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        """Stop retrying and wait (up to ``timeout``) for the runs being created; what is left stays pending."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _retry_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if failures:  # back off, whatever wakes us: new failures must not make this a busy loop
                self._stop.wait(RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S)) - 1])
            else:
                self._wake.wait(IDLE_CHECK_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            failures = 0 if self._retry_round() else failures + 1

    def _retry_round(self) -> bool:
        """Try every pending delivery not already in flight; True when none failed."""
        ok = True
        for entry in self.journal.pending():
            if self._stop.is_set():
                return ok
            if self._in_flight(entry):
                continue
            try:
                run_id = self.submit(entry).result()
                log.info("started recorded delivery %s: flow run %s", entry.delivery, run_id)
            except ApiUnreachable as exc:
                log.warning("delivery %s still not started: %s", entry.delivery, exc)
                return False  # the rest would fail the same way
            except RemoteError as exc:
                log.warning("delivery %s still not started: %s", entry.delivery, exc)
                ok = False
            except Exception:  # keep the thread alive; the entry stays pending
                log.exception("delivery %s: unexpected error while starting it", entry.delivery)
                ok = False
        return ok
