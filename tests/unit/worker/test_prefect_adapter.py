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


def test_labels_are_written_after_the_fork_once_and_settled_before_the_client_closes_but_submitting_is_awaited():
    import asyncio

    from opsflow.worker.prefect_adapter import LabelsAfterTheFork

    class Base:
        def __init__(self):
            self.sent, self.release = [], asyncio.Event()

        async def _propose_submitting_state(self, flow_run):
            await self.release.wait()
            self.sent.append(("Submitting", flow_run))

        async def _give_worker_labels_to_flow_run(self, flow_run_id):
            self.sent.append(("labels", flow_run_id))
            await self.release.wait()
            if flow_run_id == "run-2":
                raise RuntimeError("labels refused")  # logged, never raised to the run's start

    class Worker(LabelsAfterTheFork, Base):
        pass

    async def scenario():
        worker = Worker()
        # BaseWorker's order: labels, then Submitting (awaited: a late one would reopen a run that already ended).
        await asyncio.wait_for(worker._give_worker_labels_to_flow_run("run-1"), 1)  # returns at once
        submitting = asyncio.ensure_future(worker._propose_submitting_state("run-1"))
        await asyncio.sleep(0)
        assert worker.sent == [] and not submitting.done()  # nothing sent beside Submitting
        worker.release.set()
        await submitting
        worker.write_labels("run-1")  # the run's process is forked
        worker.write_labels("run-1")  # once
        worker.write_labels("run-3")  # BaseWorker never asked: nothing
        await worker._give_worker_labels_to_flow_run("run-2")
        worker.write_labels("run-2")
        await worker.settle_labels()
        assert worker.sent == [("Submitting", "run-1"), ("labels", "run-1"), ("labels", "run-2")]
        assert not worker._label_writes and not worker._labels_due
        # A run whose Submitting was refused never forks; it is forgotten after a while.
        worker.LABELS_FORGOTTEN_S = 0.0
        await worker._give_worker_labels_to_flow_run("run-4")
        await asyncio.sleep(0.001)
        await worker._give_worker_labels_to_flow_run("run-5")
        assert list(worker._labels_due) == ["run-5"]

    asyncio.run(scenario())


def test_a_runs_process_takes_the_version_checks_its_worker_passed():
    from prefect._internal import version_checking

    from opsflow.worker.prefect_adapter import api_versions_checked, remember_api_versions_checked

    key = ("http://127.0.0.1:9/api/", "3.8.0-test")
    try:
        assert list(key) not in api_versions_checked()
        remember_api_versions_checked([list(key)])
        remember_api_versions_checked(None)
        assert version_checking._is_api_version_check_cached(key)
        assert list(key) in api_versions_checked()
    finally:
        with version_checking._API_VERSION_CHECK_CACHE_LOCK:
            version_checking._API_VERSION_CHECK_CACHE.discard(key)


def test_a_client_that_learned_the_server_has_no_csrf_protection_is_told_apart():
    from prefect.client.orchestration import PrefectClient

    from opsflow.worker.prefect_adapter import server_without_csrf

    client = PrefectClient("http://127.0.0.1:9/api")
    assert hasattr(client._client, "enable_csrf_support")  # the attribute the worker reads
    client._client.enable_csrf_support = True
    assert not server_without_csrf(client)
    client._client.enable_csrf_support = False  # what the client sets when the server answers "disabled"
    assert server_without_csrf(client)


def test_the_servers_result_storage_is_read_once_and_a_failed_read_is_not_remembered():
    import asyncio
    import uuid

    from opsflow.worker.prefect_adapter import _ServerResultStorage

    block_id = uuid.uuid4()
    fetched, fallbacks = [], []
    answers = [RuntimeError("API down"), block_id]

    def fetch():
        fetched.append(1)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def prefects_read():
        fallbacks.append(1)

    async def prefects_aread():
        return "prefect's async read"

    memo = _ServerResultStorage(prefects_read, prefects_aread, fetch=fetch)
    assert asyncio.run(memo.aread()) == "prefect's async read"  # nothing read yet: Prefect's own
    assert memo.read() is None and fallbacks == [1]  # the failure: Prefect's function answers (and logs)
    assert memo.read() == block_id and memo.read() == block_id and len(fetched) == 2
    assert asyncio.run(memo.aread()) == block_id


def test_the_engine_takes_the_suspension_observer_started_early_and_hands_its_request_what_it_saw():
    import contextlib
    import uuid

    from prefect import flow_engine
    from prefect._flow_run_suspension import FlowRunSuspensionRequest

    from opsflow.worker.prefect_adapter import start_suspension_observer

    entered, exited = [], []

    @contextlib.contextmanager
    def prefects(flow_run_id, suspension_request, polling_interval: float = 10):
        entered.append(flow_run_id)
        suspension_request.mark_requested("Suspended")  # a suspension it saw before the engine asked
        try:
            yield
        finally:
            exited.append(flow_run_id)

    original = flow_engine.observe_flow_run_suspension
    flow_engine.observe_flow_run_suspension = prefects
    run_id, other_id = uuid.uuid4(), uuid.uuid4()
    try:
        early = start_suspension_observer(run_id)
        engines = FlowRunSuspensionRequest()
        with flow_engine.observe_flow_run_suspension(run_id, engines):
            assert entered == [run_id] and exited == []
            assert engines.get_state() == "Suspended"
        assert exited == [run_id]
        early.close()  # idempotent: the run's process closes it again at its end
        assert exited == [run_id]
        with flow_engine.observe_flow_run_suspension(other_id, FlowRunSuspensionRequest()):  # e.g. a subflow
            pass
        with flow_engine.observe_flow_run_suspension(run_id, FlowRunSuspensionRequest()):  # taken once only
            pass
        assert entered == [run_id, other_id, run_id] and exited == [run_id, other_id, run_id]
        unused = start_suspension_observer(uuid.uuid4())  # a run whose flow never started: closed at the end
        unused.close()
        assert len(exited) == 4
    finally:
        flow_engine.observe_flow_run_suspension = original


def test_the_settings_environment_is_prefects_computed_once_per_settings_object():
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    from opsflow.worker.job import OpsflowJobConfiguration
    from opsflow.worker.prefect_adapter import settings_environment

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        expected = get_current_settings().to_environment_variables(exclude_unset=True)
        first = settings_environment()
        assert first == expected and OpsflowJobConfiguration._base_environment() == expected
        first["PREFECT_API_URL"] = "changed by a caller"  # each caller gets its own copy
        assert settings_environment() == expected
        with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:8/api"}):  # new settings: computed again
            assert settings_environment()["PREFECT_API_URL"] == "http://127.0.0.1:8/api"
        assert settings_environment() == expected


def test_a_runs_process_names_its_related_objects_without_reading_them(monkeypatch):
    """What the worker hands over (related_objects, the deployment) gives the run's events the same related
    resources Prefect would read from the API, and none is read."""
    import asyncio
    import uuid
    from types import SimpleNamespace

    from prefect import context
    from prefect.client.schemas.objects import Flow, FlowRun, WorkPool, WorkQueue
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect.events import related

    from opsflow.worker.prefect_adapter import related_objects, seed_related_objects

    pool = WorkPool(id=uuid.uuid4(), name="vault-build", type="opsflow", default_queue_id=uuid.uuid4())
    flow = Flow(id=uuid.uuid4(), name="gitops-pr")
    queue = WorkQueue(id=uuid.uuid4(), name="default", work_pool_id=pool.id, priority=3)
    deployment = DeploymentResponse(id=uuid.uuid4(), name="default", flow_id=flow.id, tags=["shop"])
    run = FlowRun(id=uuid.uuid4(), name="r", flow_id=flow.id, deployment_id=deployment.id, work_queue_id=queue.id,
                  work_queue_name=queue.name, work_pool_name=pool.name)

    class Server:
        """The reads Prefect makes without the seed; counts them."""
        def __init__(self):
            self.reads = []

        async def read_flow(self, i):
            self.reads.append("flow")
            return flow

        async def read_deployment(self, i):
            self.reads.append("deployment")
            return deployment

        async def read_work_queue(self, i):
            self.reads.append("work-queue")
            return queue

        async def read_work_pool(self, i):
            self.reads.append("work-pool")
            return pool

    monkeypatch.setattr(context.FlowRunContext, "get", classmethod(lambda cls: SimpleNamespace(flow_run=run)))
    monkeypatch.setattr(context.TaskRunContext, "get", classmethod(lambda cls: None))
    monkeypatch.setattr(related, "RESOURCE_CACHE", {})
    read = asyncio.run(related.related_resources_from_run_context(Server()))
    server = Server()
    related.RESOURCE_CACHE.clear()
    configuration = SimpleNamespace(_related_objects={"flow": flow, "deployment": deployment})
    claimed = run.model_copy(update={"work_pool_name": None})  # as get_scheduled_flow_runs answers it
    seed_related_objects(claimed, deployment, related_objects(configuration, pool, claimed))
    seeded = asyncio.run(related.related_resources_from_run_context(server))
    assert server.reads == []
    assert [dict(r) for r in seeded] == [dict(r) for r in read]
    assert {r.id for r in seeded} >= {f"prefect.flow.{flow.id}", f"prefect.deployment.{deployment.id}",
                                      f"prefect.work-queue.{queue.id}", f"prefect.work-pool.{pool.id}",
                                      "prefect.tag.shop"}
