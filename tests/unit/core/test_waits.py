"""Waits on the Prefect API: transient failures retried until the deadline, which is named when it passes."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from opsflow.core.errors import RemoteUnavailable
from opsflow.core.waits import is_transient, retry_async, retry_sync


def status_error(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://prefect.invalid/api/x")
    return httpx.HTTPStatusError("x", request=request, response=httpx.Response(code, request=request))


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize(("exc", "transient"), [
    (httpx.ReadTimeout("slow"), True), (httpx.ConnectError("refused"), True), (status_error(503), True),
    (status_error(429), True), (status_error(502), True), (ConnectionResetError(), True),
    (status_error(404), False), (status_error(422), False), (ValueError("bad"), False),
])
def test_what_is_worth_retrying(exc, transient):
    assert is_transient(exc) is transient


def test_transient_failures_are_retried_until_an_answer():
    clock, calls = FakeClock(), []

    def flaky():
        calls.append(clock.now)
        if len(calls) < 4:
            raise [httpx.ReadTimeout("slow"), status_error(503), httpx.ConnectError("down")][len(calls) - 1]
        return "run-id"

    assert retry_sync(flaky, what="creating the run", deadline_s=60, clock=clock, sleep=clock.sleep) == "run-id"
    assert len(calls) == 4 and calls == sorted(calls)


def test_the_deadline_is_kept_and_says_what_was_waited_for():
    clock = FakeClock()

    def down():
        raise status_error(503)

    with pytest.raises(RemoteUnavailable, match=r"gave up taking the deploy lock deploy-shop-edge-1: the Prefect "
                                                r"API did not answer within 30 s \(\d+ attempt\(s\), the last one: "
                                                r"HTTP 503\)"):
        retry_sync(down, what="taking the deploy lock deploy-shop-edge-1", deadline_s=30, clock=clock,
                   sleep=clock.sleep)
    assert 30 <= clock.now <= 31  # the last attempt at the deadline


def test_a_permanent_failure_is_raised_at_once():
    calls = []

    def refused():
        calls.append(1)
        raise status_error(422)

    with pytest.raises(httpx.HTTPStatusError):
        retry_sync(refused, what="x", deadline_s=60, sleep=lambda s: None)
    assert calls == [1]


def test_the_async_wait_stops_when_told():
    async def scenario():
        stop = asyncio.Event()
        attempts = []

        async def down():
            attempts.append(1)
            if len(attempts) == 2:
                stop.set()
            raise httpx.ConnectError("down")

        with pytest.raises(RemoteUnavailable, match="stopping while the Prefect API failed"):
            await retry_async(down, what="reporting", stop=stop)
        return attempts

    assert len(asyncio.run(scenario())) == 2


def test_a_stopping_caller_stops_waiting():
    import threading

    stop = threading.Event()
    calls = []

    def down():
        calls.append(1)
        stop.set()  # the receiver is shutting down while the API is down
        raise httpx.ConnectError("down")

    with pytest.raises(RemoteUnavailable, match="gave up creating the run: stopping"):
        retry_sync(down, what="creating the run", deadline_s=600, stop=stop)
    assert calls == [1]
