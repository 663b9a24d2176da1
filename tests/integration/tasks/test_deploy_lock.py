"""The deploy lock against the session's Prefect server: a global concurrency limit of one slot,
held through a lease (tasks/deploy/lock.py)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from opsflow.core.errors import RemoteError
from tasks.deploy.lock import ensure_deploy_lock, hold_deploy_lock

pytestmark = [pytest.mark.stack]


def _active_slots(name: str) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots


def test_the_lock_holds_one_slot_and_a_second_holder_waits_for_it(stack):
    name = ensure_deploy_lock(f"deploy-lock-test-{uuid.uuid4().hex[:8]}")
    assert ensure_deploy_lock(name) == name  # a second ensure finds it and changes nothing
    order: list[str] = []

    def second() -> None:
        with hold_deploy_lock(name, timeout_s=60):
            order.append("second holds")

    with hold_deploy_lock(name, timeout_s=10) as lease:
        assert lease and _active_slots(name) == 1
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(2)
        assert order == [] and waiter.is_alive()  # it waits while the first deploy runs
        order.append("first releases")
    waiter.join(60)
    assert order == ["first releases", "second holds"]
    assert _active_slots(name) == 0


def test_a_lock_that_does_not_exist_is_an_error_not_a_free_pass(stack):
    with pytest.raises(RemoteError, match="does not exist"), hold_deploy_lock(f"missing-{uuid.uuid4().hex[:8]}"):
        pytest.fail("entered without a lock")


def test_a_lock_held_too_long_times_out_naming_it(stack):
    name = ensure_deploy_lock(f"deploy-lock-test-{uuid.uuid4().hex[:8]}")
    with hold_deploy_lock(name), pytest.raises(TimeoutError, match=name), hold_deploy_lock(name, timeout_s=1):
        pytest.fail("entered a held lock")


def test_a_lock_held_from_its_own_thread_is_taken_beside_other_work_and_given_back_on_join(stack):
    from tasks.deploy.lock import DeployLockThread

    name = ensure_deploy_lock(f"deploy-lock-test-{uuid.uuid4().hex[:8]}")
    first = DeployLockThread(name, timeout_s=30)
    assert first.acquired.result(30) == name and _active_slots(name) == 1
    second = DeployLockThread(name, timeout_s=30)
    time.sleep(1.5)
    assert not second.acquired.done()  # waits while the first holds it
    first.join()
    assert second.acquired.result(30) == name  # taken as soon as the first gave it back
    second.join()
    assert _active_slots(name) == 0


def test_a_lock_thread_reports_a_missing_lock_through_its_future(stack):
    from opsflow.core.errors import LockMissing
    from tasks.deploy.lock import DeployLockThread

    held = DeployLockThread(f"missing-{uuid.uuid4().hex[:8]}", timeout_s=10)
    with pytest.raises(LockMissing, match="does not exist"):
        held.acquired.result(30)
    held.join()
