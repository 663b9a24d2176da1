"""A receiver process per test module, routing to deployments on a pool no worker serves (runs stay scheduled)."""

from __future__ import annotations

import pytest

from tests.support.net import free_port
from tests.support.webhook_receiver import ReceiverProcess, prepare_hook_targets


@pytest.fixture(scope="module")
def hooks_setup(stack):
    """The blocks and (worker-less) deployments the receiver routes to."""
    prepare_hook_targets()
    return stack


@pytest.fixture(scope="module")
def receiver(hooks_setup, tmp_path_factory, request):
    """The receiver for a test module; a module's ``RECEIVER_ARGS`` replace the default (short) deadlines."""
    proc = ReceiverProcess(free_port(), tmp_path_factory.mktemp("hooks") / "deliveries.sqlite3",
                           hooks_setup.prefect_api_url)
    proc.args = getattr(request.module, "RECEIVER_ARGS", proc.args)
    proc.start()
    yield proc
    assert proc.stop() == 0
