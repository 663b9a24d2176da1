"""A receiver process per test module, routing to deployments on a pool no worker serves (runs stay scheduled)."""

from __future__ import annotations

import time

import pytest

from tests.support.net import free_port
from tests.support.paths import ROOT
from tests.support.webhook_receiver import DEPLOYMENT, POOL, REPO, SECRET, ReceiverProcess


@pytest.fixture(scope="module")
def hooks_setup(stack):
    """The blocks and (worker-less) deployments the receiver routes to."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, PrefectHTTPStatusError

    from opsflow.samples import save_shop_blocks
    from opsflow.stack.forge_emulator import ForgeEmulator

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except ObjectAlreadyExists:
            pass
    for entry in ("flows/gitops_pr.py:gitops_pr", "flows/gitops_merge.py:gitops_merge"):
        # A SQLite-backed server still writing the load test's burst answers 503 ("database is
        # locked") for a while on a busy machine; wait for it rather than fail the module.
        deadline = time.monotonic() + 240
        while True:
            try:
                flow.from_source(source=str(ROOT), entrypoint=entry).deploy(
                    name=DEPLOYMENT, work_pool_name=POOL, build=False, push=False, print_next_steps=False,
                    ignore_warnings=True)
                break
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 503 or time.monotonic() > deadline:
                    raise
                time.sleep(5)
    forge = ForgeEmulator()  # only its block: deliveries are signed with the block's webhook secret
    block = forge.block("github")
    block.webhook_secret = SECRET
    block.save("hooks-forge", overwrite=True)
    save_shop_blocks("file:///nowhere/hooks.git", name="hooks-app", forge_repo=REPO)
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
