"""The ``opsflow`` Prefect worker type: each flow run forked from a pre-imported zygote, started within a second.

(Over 300 lines: the worker's loops share its runs, its zygote and its stop state, and read best as one class.)

:class:`OpsflowWorker` is a ``prefect.workers.base.BaseWorker`` registered as the worker type
``opsflow`` (entry point ``prefect.collections``), so ``prefect worker start --pool vault-build
--type opsflow`` and ``opsflow worker start --pool vault-build`` start the same worker. From
``BaseWorker`` it takes, unchanged:

- the sync with the server: heartbeats, the worker listed under its pool with its type, the pool's
  base job template (:mod:`opsflow.worker.job`) kept up to date;
- claiming: ``get_and_submit_flow_runs`` asks the server which runs may start (``get_scheduled_flow_runs``:
  not from a paused pool or queue, within the pool's and the queues' concurrency limits, higher-priority
  queues first) and proposes ``Pending`` for each within the worker's ``--limit``; the server refuses
  the second of two workers, and applies the deployment's concurrency limit on that proposal;
- each run's job configuration (the pool's template, then the deployment's and the run's
  ``job_variables``), the ``prefect.worker.*`` events, the run's worker labels, and marking a run
  ``Crashed`` when its process exits non-zero.

What it adds:

- *when* to ask: the pool's event stream (:mod:`opsflow.worker.watch`) wakes the poll within tens of
  milliseconds of a run becoming due, a pool or queue being resumed, or a run ending; else it polls
  every ``poll_interval`` (5 s: each poll costs the server a few ms of CPU; at 1 s two idle workers took
  7 % of a core on the local stack's server, 3 % without them). Each poll looks ahead one interval
  (``get_scheduled_flow_runs`` with a later ``scheduled_before``) and claims only what is due now; a run due
  before the next poll (a delayed retry, a schedule) sets a timer for its time, so a run scheduled for later
  starts at its time, not up to an interval late. Nothing is claimed ahead of its scheduled time;
- :meth:`run`: forks the run from the zygote (:mod:`opsflow.worker.zygote`) into its own session and a
  fresh working directory, records it (:mod:`opsflow.worker.records`), waits for it (``run_timeout``,
  cancel requests), then removes the directory and whatever the run left running, and reports how it
  ended (:mod:`opsflow.worker.states`), retrying until the API answers;
- reconciliation at start and every ``RECONCILE_SECONDS``: runs of this worker whose process is gone
  are reported ``Crashed`` and their workspaces removed; flow runs send heartbeats for the server's
  zombie automation (:mod:`opsflow.core.heartbeats`);
- SIGTERM/SIGINT: stop claiming, wait ``shutdown_timeout`` for the running runs, kill the rest
  (``Crashed``, "the worker was stopping"), exit. A worker that dies kills its runs with it (the zygote
  sees it hang up), and the next worker of that name reports them.
- the API down: the worker keeps running, retrying with back-off and saying so once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.workers.base import BaseWorker

from opsflow.core import pids
from opsflow.core.errors import RemoteUnavailable, ZygoteError
from opsflow.core.heartbeats import heartbeat_env
from opsflow.core.waits import describe, is_transient
from opsflow.worker import prefect_adapter
from opsflow.worker.config import WorkerSettings, default_worker_name
from opsflow.worker.job import OpsflowJobConfiguration, OpsflowVariables, OpsflowWorkerResult
from opsflow.worker.reads import RecentReads
from opsflow.worker.records import (
    RECONCILE_SECONDS,
    RunRecord,
    RunRecords,
    default_state_dir,
    make_workdir,
    unrecorded_orphan,
)
from opsflow.worker.states import exit_message, propose_final, state_spec
from opsflow.worker.watch import PoolEvents
from opsflow.worker.zygote import Zygote, Zygotes

log = logging.getLogger("opsflow.worker")
#: A run woken for by a timer is asked for this long after its scheduled time (the server's clock may be ahead).
DUE_SLACK_S = 0.02

KILL_GRACE_SECONDS = 10.0
#: How often running runs are checked for ``Cancelling`` by a request (the event stream tells at once).
CANCEL_CHECK_SECONDS = 5.0
#: A reconciliation's state reports give up after this long (the next round tries again).
RECONCILE_REPORT_DEADLINE_S = 20.0


@dataclass
class RunProcess:
    """A flow run this worker forked."""

    flow_run_id: UUID
    label: str
    workdir: Path
    pid: int
    ticks: int | None
    started: float = field(default_factory=time.monotonic)
    stop_reason: str = ""  # "cancel", "timeout" or "shutdown" once the worker killed it

    def record(self) -> RunRecord:
        return RunRecord(str(self.flow_run_id), self.pid, self.ticks, str(self.workdir), self.label)


class OpsflowWorker(prefect_adapter.LabelsAfterTheFork,
                    BaseWorker[OpsflowJobConfiguration, OpsflowVariables, OpsflowWorkerResult]):
    """Runs a work pool's flow runs forked from a pre-imported zygote; see the module docstring."""

    type = "opsflow"
    job_configuration = OpsflowJobConfiguration
    job_configuration_variables = OpsflowVariables
    _description = ("opsflow's worker: hears of runs from the event stream and forks each from a process that "
                    "has imported Prefect and the flows, in its own session and working directory.")
    _display_name = "opsflow"

    def __init__(self, work_pool_name: str, work_queues: list[str] | None = None, name: str | None = None,
                 prefetch_seconds: float | None = None, create_pool_if_not_found: bool = True,
                 limit: int | None = None, heartbeat_interval_seconds: int | None = None, *,
                 base_job_template: dict[str, Any] | None = None, settings: WorkerSettings | None = None):
        """Prefect's worker arguments (``prefect worker start`` passes them); ``settings`` holds opsflow's own
        (default: from the environment). ``prefetch_seconds`` is ignored: the worker asks one poll interval
        ahead (in whole seconds, as ``BaseWorker`` asks) but claims no run (which would hold a slot) before its
        time."""
        self.settings = (settings or WorkerSettings.from_env()).with_limit(limit)
        super().__init__(work_pool_name, work_queues, name or default_worker_name(work_pool_name),
                         prefetch_seconds=self.settings.poll_interval,
                         create_pool_if_not_found=create_pool_if_not_found,
                         limit=self.settings.limit, heartbeat_interval_seconds=heartbeat_interval_seconds,
                         base_job_template=base_job_template)
        self.pool_name = work_pool_name
        self.queue_names = tuple(sorted(work_queues or ()))
        self.host = socket.gethostname()
        from prefect.settings import PREFECT_API_URL

        state_dir = self.settings.state_dir or default_state_dir(self.name, PREFECT_API_URL.value() or "")
        self.records = RunRecords(state_dir)
        self.zygotes = Zygotes(self._make_zygote)
        self.events: PoolEvents | None = None
        self._runs: dict[UUID, RunProcess] = {}
        self._reads: RecentReads | None = None
        self._wake = asyncio.Event()
        self._due_timer: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()
        self._zygote_ready = asyncio.Event()

    @property
    def zygote(self) -> Zygote | None:
        """The zygote runs are forked from now (``Zygotes`` replaces it when the preloaded code changes)."""
        return self.zygotes.current

    async def get_and_submit_flow_runs(self) -> list:
        """Claim what the server lets this worker start, but not a run whose previous process (of this worker) is
        still ending: it is taken by the poll that run's end triggers. A run due before the next poll (a retry
        or a schedule falling due) sets a timer that wakes the poll at its time."""
        submitted, next_due = await prefect_adapter.get_and_submit_flow_runs(self, leave_out=set(self._runs))
        if next_due is not None:
            self._wake_at(next_due)
        return submitted

    def _wake_at(self, when) -> None:
        """Wake the poll at ``when`` (an aware datetime); an earlier timer already set is kept."""
        import datetime as dt

        loop = asyncio.get_running_loop()
        at = loop.time() + max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds()) + DUE_SLACK_S
        timer = self._due_timer
        if timer is not None and not timer.cancelled() and loop.time() < timer.when() <= at:
            return  # an earlier wake is still to come (a timer that fired is not "cancelled": hence the time check)
        if timer is not None:
            timer.cancel()
        self._due_timer = loop.call_at(at, self._wake.set)

    @property
    def client(self):
        """``BaseWorker``'s client, with the deployment and flow reads of a claim answered once (reads.py)."""
        client = super().client
        if self._reads is None or self._reads.wrapped is not client:
            self._reads = RecentReads(client)
        return self._reads

    # --- lifecycle ------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None) -> None:
        """Stop claiming; running runs get ``shutdown_timeout`` to finish (SIGTERM/SIGINT call this)."""
        if not self._stopping.is_set():
            what = signal.Signals(signum).name if signum else "stop"
            log.info("%s received: no new runs; waiting up to %.0f s for %d running", what,
                     self.settings.shutdown_timeout, len(self._runs))
        self._stopping.set()
        self._wake.set()

    async def start(self, run_once: bool = False, with_healthcheck: bool = False, printer=print) -> None:
        """Serve the pool until SIGTERM/SIGINT (or :meth:`request_stop`); with ``run_once``, one poll and its runs.

        ``with_healthcheck`` is accepted for ``BaseWorker``'s signature; ``prefect worker start`` serves its
        health check itself.
        """
        if logging.getLogger("opsflow").level == logging.NOTSET:
            logging.getLogger("opsflow").setLevel(logging.INFO)  # under Prefect's logging config, root is WARNING
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        try:
            async with self:
                await self._serve(run_once, printer)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        printer(f"Worker {self.name!r} stopped!")

    async def _serve(self, run_once: bool, printer) -> None:
        pool = await self._await_pool()
        if pool is None:
            return
        await self.reconcile()  # first: runs a killed predecessor left RUNNING are reported at once
        await self._check_api_version()
        await self._start_zygote()
        await prefect_adapter.emit_worker_started(self)
        self.events = PoolEvents(pool.id, self.queue_names, wake=self._wake.set, on_cancelling=self.cancel,
                                 pool_name=pool.name, on_scheduled=self.client.prefetch_deployment)
        printer(f"Worker {self.name!r} started!")
        log.info("worker %s (type opsflow) serving work pool %s (%s), up to %d runs at a time", self.name, pool.name,
                 ", ".join(self.queue_names) or "all queues", self.settings.limit)
        if run_once:
            await self.get_and_submit_flow_runs()
            await self._settled()
            self._stopping.set()
        services = [asyncio.create_task(coro, name=name) for name, coro in (
            ("events", self.events.run()), ("poll", self._poll_loop()), ("sync", self._sync_loop()),
            ("reconcile", self._reconcile_loop()), ("cancel-check", self._cancel_check_loop()),
            ("zygote-supervisor", self._supervise_zygote()))]
        stop = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait([stop, *services], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop and task.exception() is not None:
                log.error("%s failed; stopping", task.get_name(), exc_info=task.exception())
        for task in services:
            task.cancel()
        await asyncio.gather(*services, return_exceptions=True)
        stop.cancel()
        await self._drain()
        await self.settle_labels()
        await self.zygotes.stop()

    async def _await_pool(self):
        """The work pool, once a sync with the server has read it (retried while the API is down)."""
        told = False
        while not self._stopping.is_set():
            with contextlib.suppress(RuntimeError):  # BaseWorker.work_pool raises until a sync read it
                return self.work_pool
            try:
                await self.sync_with_backend()
                continue
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if not told:
                    log.warning("the Prefect API does not answer (%s); waiting for it", describe(exc))
                    told = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 2.0)
        return None

    async def _check_api_version(self) -> None:
        """Prefect's check of the server's version, done once here: every run's process takes it as passed
        instead of asking again (prefect_adapter.api_versions_checked). A failure is the runs' to report."""
        try:
            await self.client.raise_for_api_version_mismatch_once()
        except Exception as exc:  # noqa: BLE001 - each run then checks for itself and fails with Prefect's message
            log.warning("the Prefect server's version could not be checked (%s); each run checks it", describe(exc))

    def _make_zygote(self) -> Zygote:
        # What every run's environment holds anyway (Prefect's settings, the heartbeat frequency) goes into
        # the zygote's, so a run's process re-reads Prefect's settings only when its job variables change one.
        # Set as the settings write them ("False", not "false"), as in every run's job environment: a run's
        # process compares the two and re-reads the settings (~0.1 s of CPU) when a value differs.
        os.environ.update(prefect_adapter.settings_environment())
        for key, value in heartbeat_env().items():
            os.environ.setdefault(key, value)
        zygote_env = {}
        if prefect_adapter.server_without_csrf(super().client):
            zygote_env["PREFECT_CLIENT_CSRF_SUPPORT_ENABLED"] = "false"  # see prefect_adapter
        return Zygote(modules=self.settings.preload, paths=[str(self.settings.project_root)], env=zygote_env,
                      warm=self.settings.warm)

    async def _start_zygote(self) -> None:
        self._zygote_ready.clear()
        ready = await self.zygotes.start()
        for module, error in ready.get("failed", {}).items():
            log.warning("zygote could not preload %s (runs will import it themselves): %s", module, error)
        log.info("zygote %s ready in %.1f s with %d modules preloaded", ready.get("pid"), ready.get("seconds", 0),
                 len(ready.get("loaded", [])))
        self._zygote_ready.set()

    async def _supervise_zygote(self) -> None:
        backoff = 1.0
        while True:
            current = self.zygote
            lost = asyncio.ensure_future(current.lost.wait())
            swapped = asyncio.ensure_future(self.zygotes.swapped.wait())
            await asyncio.wait([lost, swapped], return_when=asyncio.FIRST_COMPLETED)
            lost.cancel()
            swapped.cancel()
            self.zygotes.swapped.clear()
            if self.zygote is not current or not current.lost.is_set():
                continue  # replaced by a zygote with the current code: watch that one
            self._zygote_ready.clear()
            log.error("the zygote died; restarting it (running runs carry on)")
            try:
                await self._start_zygote()
                backoff = 1.0
            except (ZygoteError, OSError) as exc:
                log.error("restarting the zygote failed: %s; retrying in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    async def _drain(self) -> None:
        """Wait for the runs being claimed and running; kill what still runs after the shutdown timeout."""
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while (self._runs or prefect_adapter.submissions_in_flight(self)) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self._runs:
            log.warning("%d run(s) still running after %.0f s; killing them: %s", len(self._runs),
                        self.settings.shutdown_timeout, ", ".join(r.label for r in self._runs.values()))
            for run in list(self._runs.values()):
                self._kill(run, "shutdown")
            deadline = time.monotonic() + KILL_GRACE_SECONDS + 30
            while self._runs and time.monotonic() < deadline:
                await asyncio.sleep(0.1)

    async def _settled(self) -> None:
        """Until no run is being claimed or running (``run_once``)."""
        while self._runs or prefect_adapter.submissions_in_flight(self):
            await asyncio.sleep(0.1)

    # --- the loops ----------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        """Ask the server for runs when woken (events, a slot freed) or every poll interval."""
        failing = False
        while not self._stopping.is_set():
            interval = (self.settings.poll_interval if self.events and self.events.connected
                        else self.settings.fallback_poll_interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            await self._zygote_ready.wait()
            await self._claims_settled()
            failing = await self._attempt(self.get_and_submit_flow_runs, f"polling work pool {self.pool_name}",
                                          failing)

    @staticmethod
    async def _attempt(operation, what: str, failing: bool) -> bool:
        """One round of a loop that must go on whatever happens; says once when it starts and stops failing.
        Returns whether it failed."""
        try:
            await operation()
        except Exception as exc:  # the loop tries again; the worker goes on
            if not failing:
                if is_transient(exc):
                    log.warning("%s failed (%s); retrying", what, describe(exc))
                else:
                    log.exception("%s failed; retrying", what)
            return True
        if failing:
            log.info("%s works again", what)
        return False

    async def _claims_settled(self, limit_s: float = 10.0) -> None:
        """Wait until no ``Pending`` proposal of this worker is in flight (see prefect_adapter), at most ``limit_s``."""
        deadline = time.monotonic() + limit_s
        while prefect_adapter.submissions_in_flight(self) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def _sync_loop(self) -> None:
        """``BaseWorker.sync_with_backend`` (heartbeat, pool template) every heartbeat interval, whatever happens."""
        failing = False
        while True:
            await asyncio.sleep(self.heartbeat_interval_seconds)
            failing = await self._attempt(self.sync_with_backend, f"the heartbeat to work pool {self.pool_name}",
                                          failing)

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_SECONDS)
            await self.reconcile()

    async def _cancel_check_loop(self) -> None:
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterId,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        while True:
            await asyncio.sleep(CANCEL_CHECK_SECONDS)
            if not self._runs:
                continue
            try:
                flow_runs = await self.client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=list(self._runs)),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING]))))
            except Exception as exc:  # noqa: BLE001 - the next check (or the event stream) tells again
                log.debug("cancel check failed: %s", describe(exc))
                continue
            for flow_run in flow_runs:
                self.cancel(flow_run.id)

    # --- one run ----------------------------------------------------------------------------

    async def run(self, flow_run, configuration: OpsflowJobConfiguration, task_status=None) -> OpsflowWorkerResult:
        """Fork the run, tell Prefect it started (``host:pid``), wait for it, clean up, report how it ended."""
        await self._zygote_ready.wait()
        run_id = flow_run.id
        workdir = make_workdir(configuration.working_dir_root or self.settings.workdir_root, self.name, run_id)
        deployment = prefect_adapter.related_deployment(configuration)
        job = {"flow_run_id": str(run_id), "workdir": str(workdir), "project_root": str(self.settings.project_root),
               "env": configuration.run_environment(defaults=heartbeat_env()),
               "stream_output": configuration.stream_output, "flow_run": flow_run.model_dump(mode="json"),
               "deployment": deployment.model_dump(mode="json") if deployment is not None else None,
               "related": prefect_adapter.related_objects(configuration, self.work_pool, flow_run),
               "api_versions_checked": prefect_adapter.api_versions_checked()}
        self.zygotes.refresh_if_changed()  # a git pull of the worker's checkout: a new zygote for the next runs
        try:
            child = await self.zygote.spawn(str(run_id), job)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        finally:
            self.write_labels(run_id)  # beside the run's start (prefect_adapter.LabelsAfterTheFork)
        run = RunProcess(run_id, f"{flow_run.name} ({run_id})", workdir, child.pid, pids.start_ticks(child.pid))
        self._runs[run_id] = run
        try:
            self.records.write(run.record())
        except OSError as exc:  # the run goes on; only a crash of this worker would leave it unreported
            log.error("could not record flow run %s in %s (%s): if this worker dies, the next one cannot report "
                      "it", run.label, self.records.directory, exc)
        identifier = f"{self.host}:{child.pid}"
        if task_status is not None:
            task_status.started(identifier)
        created = flow_run.created.timestamp() if flow_run.created else None
        log.info("started flow run %s of deployment %s: pid %d, %s after it was created", run.label,
                 deployment.name if deployment is not None else "?", child.pid,
                 f"{(time.time() - created) * 1000:.0f} ms" if created else "?")
        try:
            try:
                code = await self._wait(run, child.exited, configuration.run_timeout)
            finally:
                self._kill(run, run.stop_reason or "ended")  # whatever the run started and left behind
                shutil.rmtree(workdir, ignore_errors=True)
            final = await self._report_end(run, code)
        finally:
            self._runs.pop(run_id, None)
            await self.zygotes.retire_idle()  # a replaced zygote stops once its last run has ended
            # A slot is free once BaseWorker releases it, right after this returns; the poll then runs.
            asyncio.get_running_loop().call_soon(self._wake.set)
        return OpsflowWorkerResult(identifier=identifier, status_code=code if code is not None else (0 if final else 1))

    async def _wait(self, run: RunProcess, exited: asyncio.Future, timeout: int | None) -> int | None:
        if timeout is None:
            return await exited
        try:
            return await asyncio.wait_for(asyncio.shield(exited), timeout)
        except TimeoutError:
            log.warning("flow run %s exceeded its run timeout of %d s; killing it", run.label, timeout)
            self._kill(run, "timeout")
            return await exited

    async def _report_end(self, run: RunProcess, code: int | None) -> bool:
        """Propose the final state the run's process could not report; returns whether the run ended final."""
        seconds = time.monotonic() - run.started
        if run.stop_reason == "cancel":
            spec = state_spec("cancelled", "Cancelled: the worker killed the run's process.")
        elif run.stop_reason == "timeout":
            spec = state_spec("timed-out", "The run exceeded its run timeout (job variable run_timeout); the worker "
                                           "killed its process group.")
        elif code == 0:
            log.info("flow run %s exited with code 0 after %.1f s", run.label, seconds)
            self.records.remove(run.flow_run_id)
            return True
        elif code is None and await self._is_final(run.flow_run_id):
            log.info("flow run %s ended (exit code unknown) after %.1f s", run.label, seconds)
            self.records.remove(run.flow_run_id)
            return True
        else:
            message = (exit_message(code) if code is not None else
                       "Flow run process ended while the worker's zygote was down; its exit code is unknown.")
            if run.stop_reason == "shutdown":
                message += " The worker was stopping and killed it."
            spec = state_spec("crashed", message)
        with contextlib.suppress(OSError):  # logged when the run started
            self.records.write(RunRecord(**{**run.record().__dict__, "pending_state": spec}))
        try:
            taken = await propose_final(self.client, run.flow_run_id, spec, stop=self._stopping)
        except RemoteUnavailable as exc:
            log.warning("flow run %s: %s; the next start of this worker reports it", run.label, exc)
            return False
        self.records.remove(run.flow_run_id)
        log.warning("flow run %s ended after %.1f s (exit code %s): %s%s", run.label, seconds, code, spec["message"],
                    f" Marked {spec['name']}." if taken else " It had already reached a final state.")
        return True

    async def _is_final(self, run_id: UUID) -> bool:
        flow_run = await self.client.read_flow_run(run_id)
        return bool(flow_run.state and flow_run.state.is_final())

    # --- cancel, kill, reconcile ----------------------------------------------------------------

    def cancel(self, flow_run_id: UUID) -> None:
        """A run of this worker is ``Cancelling``: kill its process group (it is then reported ``Cancelled``)."""
        run = self._runs.get(flow_run_id)
        if run is not None and not run.stop_reason:
            log.info("flow run %s is cancelling; killing its process group", run.label)
            self._kill(run, "cancel")

    def _kill(self, run: RunProcess, reason: str) -> None:
        run.stop_reason = run.stop_reason or reason
        for kill in (os.killpg, os.kill):
            try:
                kill(run.pid, signal.SIGKILL)
                return
            except ProcessLookupError:
                continue
            except PermissionError:
                return

    async def kill_infrastructure(self, infrastructure_pid: str, configuration, grace_seconds: int = 30) -> None:
        """Kill a run's process group by its ``host:pid`` (``BaseWorker`` calls this to cancel a pending run)."""
        from prefect.exceptions import InfrastructureNotAvailable, InfrastructureNotFound

        host, _, pid = str(infrastructure_pid).rpartition(":")
        if host != self.host or not pid.isdigit():
            raise InfrastructureNotAvailable(f"{infrastructure_pid} is not a process of this host ({self.host})")
        run = next((r for r in self._runs.values() if r.pid == int(pid)), None)
        if run is None:
            raise InfrastructureNotFound(f"no run process {pid} of worker {self.name}")
        self._kill(run, "cancel")

    async def reconcile(self) -> None:
        """Report runs of this worker whose process is gone and remove their workspaces (see records.py)."""
        for record in self.records.load():
            if UUID(record.flow_run_id) in self._runs or pids.alive(record.pid, record.ticks):
                continue
            shutil.rmtree(record.workdir, ignore_errors=True)
            spec = record.pending_state or state_spec("crashed", (
                f"The run's process (pid {record.pid} on {self.host}) ended while its worker {self.name} was not "
                "watching it: the worker was stopped or killed. Marked Crashed when the worker started again."))
            if await self._report_orphan(UUID(record.flow_run_id), spec, record.label or record.flow_run_id):
                self.records.remove(record.flow_run_id)
        try:
            candidates = await self._owned_unfinished_runs()
        except Exception as exc:  # noqa: BLE001 - reconciliation is retried on its next round
            log.debug("reconciliation could not list the pool's runs: %s", describe(exc))
            return
        known = set(self._runs) | {UUID(r.flow_run_id) for r in self.records.load()}
        known |= set(prefect_adapter.submitting_ids(self))
        for flow_run in candidates:
            why = unrecorded_orphan(flow_run, worker_name=self.name, host=self.host, known=known,
                                    pid_alive=pids.alive, now=time.time())
            if why is not None:
                await self._report_orphan(flow_run.id, state_spec("crashed", why), f"{flow_run.name} ({flow_run.id})")

    async def _report_orphan(self, flow_run_id: UUID, spec: dict, label: str) -> bool:
        try:
            taken = await propose_final(self.client, flow_run_id, spec, deadline_s=RECONCILE_REPORT_DEADLINE_S)
        except RemoteUnavailable as exc:
            log.warning("reconciliation: %s; tried again in %.0f s", exc, RECONCILE_SECONDS)
            return False
        if taken:
            log.warning("reconciliation: flow run %s marked %s: %s", label, spec["name"], spec["message"])
        return True

    async def _owned_unfinished_runs(self) -> list:
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            WorkPoolFilter,
            WorkPoolFilterName,
        )
        from prefect.client.schemas.objects import StateType

        return await self.client.read_flow_runs(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self.pool_name])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]))))
