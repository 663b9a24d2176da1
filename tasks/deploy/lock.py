"""One deploy per (application, target) at a time: a Prefect global concurrency limit with one
slot, named ``deploy-<app>-<target>``, held with Prefect's own ``concurrency()`` for the whole rollout.

``concurrency()`` takes the slot through a lease that it renews while the deploy runs, so a crashed
deploy frees the target when its lease expires, and gives it back at the end. Around it this module
adds what a deploy needs from a wait: one line saying that another deploy holds the target; a
deadline of its own (``timeout_s``) that raises :class:`~opsflow.core.errors.LockTimeout` naming the
lock; and patience with the API: a timeout, a refused connection or a 5xx while taking the slot is
tried again until that deadline, as is giving it back. A deploy waits for a slow API, it does not
fail on it.

Why Prefect's ``concurrency()`` and no longer raw lease POSTs: those were written for a SQLite-backed
server, which answered the increment with 503 (Prefect's client then sleeps 2 s, then 4 s). On the
stack's PostgreSQL (``opsflow stack up``'s default) no 503 comes, and the figure that remains is small
against a deploy of seconds to minutes: taking and giving back a free lock took 117 ms median (p95
162 ms) through ``concurrency()`` (it also emits the acquisition/release events the UI shows and
renews the lease in the background), 142 ms (p95 218 ms) through ``hold_deploy_lock``, against 30 ms
(p95 55 ms) for the two raw POSTs (20 rounds each, interleaved, local stack on PostgreSQL, shared
2-CPU machine at load ~8). On a SQLite-backed server a 503 now makes the deploy wait, never fail.

:class:`DeployLockThread` holds the same lock from a thread of its own, so the manual deploy flow takes a
target's lock while it loads its blocks and publishes the plan, and gives it back while it publishes the
results: taking and giving back the slot are two API round trips each (with the lease renewal the
``concurrency()`` context starts at once), 0.1 s at rest and 0.4-0.8 s at load 12 on the stack, that no
longer wait one after the other with the rest of a deploy (``bench/deploy.py``).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

from opsflow.core.errors import LockMissing, LockTimeout, RemoteError
from opsflow.core.threads import start_thread
from opsflow.core.waits import describe, is_transient, retry_sync

LEASE_S = 300.0  # renewed by concurrency() while the deploy runs


def deploy_lock_name(app: str, target: str) -> str:
    """The name of the lock that makes deploys of ``app`` to ``target`` take turns."""
    return f"deploy-{app}-{target}"


def ensure_deploy_lock(name: str) -> str:
    """The global concurrency limit (1 slot) that makes deploys of one app to one target take
    turns: created when missing; returns its name. A plain function, no task run: ``hold_deploy_lock``
    calls it only when the limit turns out to be missing (a deploy's first to that target)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    def ensure() -> str:
        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                # Read first: creating an existing limit leaves an IntegrityError in the server's log.
                with contextlib.suppress(ObjectAlreadyExists):  # another deploy created it a moment ago
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        return name

    return retry_sync(ensure, what=f"creating the deploy lock {name}", deadline_s=300)


@contextlib.contextmanager
def hold_deploy_lock(name: str, holder: dict | None = None, timeout_s: float = 3600,
                     logger=None, create: bool = False) -> Iterator[str]:
    """Hold the one slot of limit ``name`` while the block runs; yields the limit's name.

    Waits (at most ``timeout_s`` in all) while another deploy holds it, and while the API does not answer.
    ``create``: a missing limit is created (``ensure_deploy_lock``) and taken; else it is an error. Taking
    the slot first and creating only on "missing" saves a deploy the read of the limit (one API round
    trip, 30-90 ms here) every time but the first.

    Raises:
        LockTimeout: the lock stayed held by another deploy (or the API silent) for ``timeout_s``.
        LockMissing: the limit does not exist (and ``create`` is false).
        RemoteError: the server refused.
    """
    slot = _acquire(name, holder, time.monotonic() + timeout_s, timeout_s, logger, create)
    try:
        yield name
    except BaseException:
        _release(slot, name, logger, *sys.exc_info())
        raise
    _release(slot, name, logger, None, None, None)


def _acquire(name: str, holder: dict | None, deadline: float, timeout_s: float, logger, create: bool):
    """The entered ``concurrency(name)`` context: first tried without waiting (to say once that another
    deploy holds it), then waiting until ``deadline``; transient API failures are tried again until then;
    with ``create``, a missing limit is created once and tried again."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency.sync import concurrency

    lease_holder = ConcurrencyLeaseHolder.model_validate(holder) if holder else None
    told = False
    while True:
        slot = concurrency(name, occupy=1, timeout_seconds=max(deadline - time.monotonic(), 0.1),
                           max_retries=None if told else 0, lease_duration=LEASE_S, strict=True,
                           holder=lease_holder, raise_on_lease_renewal_failure=False)
        try:
            slot.__enter__()
            return slot
        except TimeoutError as exc:
            raise LockTimeout(f"another deploy held {name} for more than {timeout_s:.0f}s") from exc
        except Exception as exc:
            cause = exc.__cause__ or exc
            if _status(cause) == 423 and not told:  # held: say so once, then wait for it
                if logger is not None:
                    logger.warning("another deploy holds %s (one deploy per app and target at a time); waiting for "
                                   "it to finish (at most %.0fs)", name, timeout_s)
                told = True
                continue
            if "must be created" in str(exc) and create:
                ensure_deploy_lock(name)
                create = False  # created (or found, made by another deploy meanwhile): take it now
                continue
            if "must be created" in str(exc):
                raise LockMissing(f"the concurrency limit {name} does not exist (ensure_deploy_lock creates it)"
                                  ) from None
            if not is_transient(cause):
                raise RemoteError(f"the Prefect server refused the deploy lock {name}: {describe(cause)}") from exc
            if time.monotonic() >= deadline:
                raise LockTimeout(f"the Prefect API did not answer for {timeout_s:.0f}s while taking the deploy lock "
                                  f"{name} ({describe(cause)})") from exc
            if logger is not None:
                logger.warning("taking the deploy lock %s: the Prefect API did not answer (%s); trying again", name,
                               describe(cause))
            time.sleep(min(2.0, max(deadline - time.monotonic(), 0)))


def _release(slot, name: str, logger, *exc_info) -> None:
    """Give the slot back (Prefect's client retries it); if that fails the deploy stands and the lease expires."""
    try:
        slot.__exit__(*exc_info)
    except Exception as exc:  # noqa: BLE001 - the deploy itself is done; the lease expires on its own
        if logger is not None:
            logger.warning("could not release the deploy lock %s (it frees itself when its lease expires in at "
                           "most %.0fs): %s", name, LEASE_S, describe(exc))


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


class DeployLockThread:
    """``hold_deploy_lock(name, ...)`` entered and left in a thread of its own, started at once: the
    caller goes on with other work and waits for ``acquired`` (a future: the lock's name, or the error
    ``hold_deploy_lock`` raised) only where the lock must be held; ``release()`` gives it back (in that
    thread, beside the caller's next step) and ``join()`` waits until it is given back.
    """

    def __init__(self, name: str, holder: dict | None = None, timeout_s: float = 3600, logger=None,
                 create: bool = False):
        self.name = name
        self.acquired: Future = Future()
        self._done = threading.Event()
        self._thread = start_thread(self._hold, holder, timeout_s, logger, create, name=f"lock-{name}"[:60])

    def _hold(self, holder: dict | None, timeout_s: float, logger, create: bool) -> None:
        try:
            with hold_deploy_lock(self.name, holder=holder, timeout_s=timeout_s, logger=logger, create=create):
                self.acquired.set_result(self.name)
                self._done.wait()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter through the future, not lost
            if not self.acquired.done():
                self.acquired.set_exception(exc)

    def release(self) -> None:
        """Give the lock back (at once when held; as soon as it is taken when still waiting for it)."""
        self._done.set()

    def join(self, timeout_s: float = 30) -> None:
        """Release, and wait until the lock is given back; a thread still waiting to take it is not waited
        for (it gives the lock back as soon as it gets it)."""
        self.release()
        if self.acquired.done():
            self._thread.join(timeout_s)
