"""Waiting on the Prefect API: each wait has its own deadline, retries what may pass, and says what it waited for.

A slow or restarting Prefect server must make a step wait, not fail. Prefect's client already
retries a few answers (429/502/503 and read timeouts, up to ``PREFECT_CLIENT_MAX_RETRIES`` times),
but a caller that must not give up after those few (a webhook's run creation, a deploy waiting
for its lock, a worker reporting how a run ended) needs a deadline of its own: :func:`retry_sync`
and :func:`retry_async` call an operation again, with a growing pause, as long as it fails in a
way that may pass (:func:`is_transient`: a timeout, a refused or reset connection, 408/429/5xx),
and raise :class:`~opsflow.core.errors.RemoteUnavailable` naming what was waited for once the
deadline passes. Any other failure is raised at once. The operation must be safe to repeat
(an idempotency key, a state proposal, a read).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import httpx

from opsflow.core.errors import RemoteUnavailable

T = TypeVar("T")

#: HTTP answers that say "not now": the request may succeed when sent again.
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Pauses between attempts (seconds), the last one repeated; each is jittered by +-25 %.
PAUSES_S = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


def is_transient(exc: BaseException) -> bool:
    """True for a failure worth retrying: timeouts, connection errors, 408/425/429/5xx answers."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in TRANSIENT_STATUS
    return isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError)


def describe(exc: BaseException) -> str:
    """A short, secret-free account of a failure: its type and, for an HTTP answer, the status."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


def pauses(first: float | None = None) -> Iterator[float]:
    """The pauses between attempts, jittered so that callers failing together do not retry together."""
    sequence = PAUSES_S if first is None else (first, *PAUSES_S[1:])
    index = 0
    while True:
        yield sequence[min(index, len(sequence) - 1)] * random.uniform(0.75, 1.25)  # noqa: S311 - jitter, not a secret
        index += 1


def _gave_up(what: str, deadline_s: float, attempts: int, exc: BaseException) -> RemoteUnavailable:
    return RemoteUnavailable(f"gave up {what}: the Prefect API did not answer within {deadline_s:.0f} s "
                             f"({attempts} attempt(s), the last one: {describe(exc)}); check that the server is up")


def _stopped(what: str, attempts: int, exc: BaseException) -> RemoteUnavailable:
    return RemoteUnavailable(f"gave up {what}: stopping while the Prefect API failed ({attempts} attempt(s), "
                             f"the last one: {describe(exc)})")


def retry_sync(operation: Callable[[], T], *, what: str, deadline_s: float,
               on_retry: Callable[[BaseException, float], None] | None = None, stop: threading.Event | None = None,
               clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> T:
    """``operation()``, called again after transient failures until ``deadline_s`` has passed (or ``stop`` is set).

    Args:
        operation: the call; must be safe to repeat.
        what: what is waited for, for the error ("creating the run of delivery X").
        deadline_s: how long to keep trying, in seconds.
        on_retry: called with the failure and the pause before each new attempt (to log it once).
        stop: set when the caller is shutting down: no more attempts.

    Raises:
        RemoteUnavailable: the deadline passed (or ``stop`` was set) with the API still failing transiently.
        Exception: whatever non-transient error ``operation`` raised.
    """
    deadline = clock() + deadline_s
    attempts = 0
    for pause in pauses():
        attempts += 1
        try:
            return operation()
        except Exception as exc:
            if not is_transient(exc):
                raise
            remaining = deadline - clock()
            if remaining <= 0:
                raise _gave_up(what, deadline_s, attempts, exc) from exc
            if stop is not None and stop.is_set():
                raise _stopped(what, attempts, exc) from exc
            if on_retry is not None:
                on_retry(exc, pause)
            if stop is not None:
                stop.wait(min(pause, remaining))
            else:
                sleep(min(pause, remaining))  # the last attempt is made at the deadline
    raise AssertionError("unreachable")  # pragma: no cover - pauses() never ends


async def retry_async(operation: Callable[[], Awaitable[T]], *, what: str, deadline_s: float | None = None,
                      stop: asyncio.Event | None = None,
                      on_retry: Callable[[BaseException, float], None] | None = None) -> T:
    """``await operation()``, again after transient failures, until ``deadline_s`` (None: no deadline) passes
    or ``stop`` is set.

    Raises:
        RemoteUnavailable: the deadline passed, or ``stop`` was set, with the API still failing transiently.
        Exception: whatever non-transient error ``operation`` raised.
    """
    loop = asyncio.get_running_loop()
    deadline = None if deadline_s is None else loop.time() + deadline_s
    attempts = 0
    for step in pauses():
        attempts += 1
        pause = step
        try:
            return await operation()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if stop is not None and stop.is_set():
                raise _stopped(what, attempts, exc) from exc
            if deadline is not None and deadline_s is not None:
                if loop.time() >= deadline:
                    raise _gave_up(what, deadline_s, attempts, exc) from exc
                pause = min(pause, deadline - loop.time())
            if on_retry is not None:
                on_retry(exc, pause)
            if stop is None:
                await asyncio.sleep(pause)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), pause)
                except TimeoutError:
                    pass
    raise AssertionError("unreachable")  # pragma: no cover - pauses() never ends
