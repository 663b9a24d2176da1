"""The private Prefect names the worker relies on (opsflow.worker.prefect_adapter) still exist in the installed
Prefect. When an upgrade moves one, this fails naming it: change the adapter, nothing else."""

from __future__ import annotations

import importlib

import pytest

from opsflow.worker import prefect_adapter


@pytest.mark.parametrize(("module", "path"), prefect_adapter.PRIVATE_NAMES)
def test_each_private_name_is_still_there(module, path):
    target = importlib.import_module(module)
    for part in path.split("."):
        if isinstance(target, dict):
            assert part in target, f"{module}:{path} is gone from Prefect: {part!r} missing"
            target = target[part]
        else:
            assert hasattr(target, part), f"{module}:{path} is gone from Prefect: {part!r} missing"
            target = getattr(target, part)


def test_a_worker_has_the_attributes_the_adapter_reads():
    from prefect.client.schemas.objects import FlowRun
    from prefect.client.schemas.responses import DeploymentResponse

    from opsflow.worker.config import WorkerSettings
    from opsflow.worker.job import OpsflowJobConfiguration
    from opsflow.worker.prefect_worker import OpsflowWorker

    worker = OpsflowWorker("pool", name="w", settings=WorkerSettings(preload=()))
    for attribute in prefect_adapter.WORKER_ATTRIBUTES:
        assert hasattr(worker, attribute), f"BaseWorker no longer sets {attribute}"
    assert prefect_adapter.submissions_in_flight(worker) == 0 and prefect_adapter.submitting_ids(worker) == set()

    import uuid

    deployment = DeploymentResponse(id=uuid.uuid4(), name="d", flow_id=uuid.uuid4())
    config = OpsflowJobConfiguration()
    config.prepare_for_flow_run(FlowRun(flow_id=deployment.flow_id, name="r"), deployment=deployment)
    assert prefect_adapter.related_deployment(config) is deployment
    assert prefect_adapter.related_deployment(OpsflowJobConfiguration()) is None


def test_the_heartbeat_thread_stops_when_its_run_ends_not_a_second_later():
    """Prefect 3.8's loop sleeps in 1 s steps and a sync run joins it; opsflow's waits on its stop event."""
    import threading

    from prefect import flow_engine

    from opsflow.worker.prefect_adapter import prompt_heartbeat_stop

    original = flow_engine._send_heartbeats
    sent = threading.Event()

    class Engine:
        heartbeat_seconds = 30
        flow_run = None
        logger = None

        def _build_heartbeat_event_template(self):
            return {}, []

        def _emit_flow_run_heartbeat(self, resource, related):
            sent.set()

    try:
        prompt_heartbeat_stop()
        prompt_heartbeat_stop()  # idempotent
        before = set(threading.enumerate())
        with flow_engine._send_heartbeats(Engine(), join_on_exit=False):
            assert sent.wait(5)  # the first heartbeat goes out at once
            (thread,) = set(threading.enumerate()) - before
        thread.join(0.25)  # Prefect's own loop would still be in its 1 s sleep here
        assert not thread.is_alive()
    finally:
        flow_engine._send_heartbeats = original


def test_prefect_clients_share_one_verified_tls_context_per_ca_file():
    import ssl

    import certifi
    from prefect.client import orchestration
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    from opsflow.worker.prefect_adapter import share_client_tls_contexts

    original = orchestration.ssl
    try:
        share_client_tls_contexts()
        share_client_tls_contexts()  # idempotent
        one = SyncPrefectClient("http://127.0.0.1:9/api")
        two = SyncPrefectClient("http://127.0.0.1:9/api")
        first = one._client._transport._pool._ssl_context
        assert first is two._client._transport._pool._ssl_context
        assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname  # still verifying
        cafile = PREFECT_API_SSL_CERT_FILE.value() or certifi.where()
        assert orchestration.ssl.create_default_context(cafile=cafile) is first
        assert orchestration.ssl.create_default_context() is not first  # an unverified caller gets its own
        assert orchestration.ssl.SSLContext is ssl.SSLContext
    finally:
        orchestration.ssl = original
