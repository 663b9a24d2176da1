"""One deploy per (application, target) at a time: a Prefect global concurrency limit with one
slot, named ``deploy-<app>-<target>``, held through a lease for the whole rollout.

The slot is taken and given back through the server's lease endpoints (the ones
``prefect.concurrency.sync.concurrency`` calls), via opsflow.core.prefect_api: on a SQLite-backed
server the increment races the run's own log and state writes and is answered 503, after which
Prefect's client sleeps 2 s, then 4 s; that was two thirds of a one-node deploy and most of a
four-node one. The lease is renewed while the deploy runs, so a crashed deploy frees the
target when its lease expires.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator

from prefect import task

from opsflow.core.errors import LockTimeout, RemoteError
from opsflow.core.prefect_api import api_client, post_busy_retried
from opsflow.core.threads import start_thread

LEASE_S = 300.0  # renewed every LEASE_S / 3 while the deploy runs
# A 503 here is answered at once (the transaction lost a race), so retrying soon is cheap; deploys
# to several targets take their locks at the same moment and would collide again on a longer beat.
BUSY_RETRIES_S = (0.02, 0.04, 0.08, 0.15, 0.25, 0.4, 0.6, 1.0, 1.0, 2.0, 2.0, None)


@task(name="ensure-deploy-lock", task_run_name="ensure-deploy-lock-{name}")
def ensure_deploy_lock(name: str) -> str:
    """The global concurrency limit (1 slot) that makes deploys of one app to one target take
    turns: created when missing; returns its name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            # Read first: creating an existing limit leaves an IntegrityError in the server's log.
            with contextlib.suppress(ObjectAlreadyExists):  # another deploy created it a moment ago
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    return name


@contextlib.contextmanager
def hold_deploy_lock(name: str, holder: dict | None = None, timeout_s: float = 3600,
                     logger=None) -> Iterator[str]:
    """Hold the one slot of limit ``name`` while the block runs; yields the lease id.

    Waits (as long as the server's Retry-After says, at most ``timeout_s`` in all) while another
    deploy holds it. Raises LockTimeout when it stays held, RemoteError when the limit does not
    exist or the server refuses.
    """
    # Longer than SQLite's 60 s busy timeout: a request the server is still working on is not
    # given up (an increment given up on could leave a lease behind that nobody releases).
    client = api_client(timeout=90)
    try:
        lease_id = _acquire(client, name, holder, timeout_s, logger)
        stop = threading.Event()
        renewer = start_thread(_renew, client, lease_id, stop, logger, name=f"lease-{name}")
        try:
            yield lease_id
        finally:
            stop.set()
            renewer.join(10)
            _release(client, lease_id, logger)
    finally:
        client.close()


def _acquire(client, name: str, holder: dict | None, timeout_s: float, logger) -> str:
    body = {"names": [name], "slots": 1, "mode": "concurrency", "lease_duration": LEASE_S}
    if holder:
        body["holder"] = holder
    deadline = time.monotonic() + timeout_s
    told = False
    while True:
        resp = post_busy_retried(client, "v2/concurrency_limits/increment-with-lease", body, BUSY_RETRIES_S)
        if resp.status_code == 200:
            answer = resp.json()
            if not answer.get("limits"):  # the server grants a lease on no limit at all when it is missing
                _release(client, answer["lease_id"], logger)
                raise RemoteError(f"the concurrency limit {name} does not exist (ensure_deploy_lock creates it)")
            return answer["lease_id"]
        if resp.status_code != 423:
            raise RemoteError(f"the Prefect server refused the deploy lock {name}: "
                              f"HTTP {resp.status_code} {resp.text[:200]}")
        wait = float(resp.headers.get("Retry-After") or 1.0)
        if time.monotonic() + wait > deadline:
            raise LockTimeout(f"another deploy held {name} for more than {timeout_s:.0f}s")
        if not told and logger is not None:  # said where the wait happens, once
            logger.warning("another deploy holds %s (one deploy per app and target at a time); waiting for it "
                           "to finish (retrying every %.1fs)", name, wait)
            told = True
        time.sleep(min(wait, 5.0) * random.uniform(0.9, 1.1))  # noqa: S311 - jitter, not a secret


def _renew(client, lease_id: str, stop: threading.Event, logger) -> None:
    while not stop.wait(LEASE_S / 3):
        try:
            resp = post_busy_retried(client, f"v2/concurrency_limits/leases/{lease_id}/renew",
                                     {"lease_duration": LEASE_S})
            if resp.status_code >= 400 and logger is not None:
                logger.warning("could not renew the deploy lock's lease: HTTP %s", resp.status_code)
        except Exception as exc:  # noqa: BLE001 - retried on the next tick; the lease has time left
            if logger is not None:
                logger.warning("could not renew the deploy lock's lease: %s", exc)


def _release(client, lease_id: str, logger, attempts: int = 3) -> None:
    """Give the slot back. Sent again when an answer does not come: releasing a released lease
    changes nothing, so it is safe; if it never goes through, the lease expires on its own."""
    for attempt in range(1, attempts + 1):
        try:
            resp = post_busy_retried(client, "v2/concurrency_limits/decrement-with-lease", {"lease_id": lease_id},
                                     BUSY_RETRIES_S)
            resp.raise_for_status()
            return
        except Exception as exc:  # noqa: BLE001 - the deploy itself is done; the lease expires on its own
            if attempt == attempts:
                if logger is not None:
                    logger.warning("could not release the deploy lock (it frees itself when its lease expires in "
                                   "at most %.0fs): %s", LEASE_S, exc)
                return
            time.sleep(attempt)
