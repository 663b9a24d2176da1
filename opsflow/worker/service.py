"""The worker's main loop: watch the pool, claim due runs, fork them from the zygote, report how they ended.

One asyncio loop in the worker process, one Prefect client, and these tasks:

- heartbeat: ``send_worker_heartbeat`` every ``heartbeat_interval`` (the UI shows the worker
  ONLINE under its pool), and a fresh copy of the pool's base job template for the runs' env;
- watcher (:mod:`opsflow.worker.watch`): sightings from the event stream and the poll;
- dispatcher: takes a sighting when one of ``limit`` slots is free, and hands it to a run task:
  read the run if needed, check it (:func:`~opsflow.worker.claim.check_run`), claim it
  (``Pending``) while reading its deployment, make its working directory, fork it from the
  zygote, wait for its exit, remove the directory and whatever processes the run left behind,
  and mark it ``Crashed`` when the process did not exit 0 (a segfault, ``os._exit``, SIGKILL,
  an error the engine could not report);
- zygote supervisor: restarts the zygote should it die (runs already forked carry on).

SIGTERM or SIGINT: stop watching and claiming, wait ``shutdown_timeout`` for the running runs,
SIGKILL the ones still running (marked ``Crashed``, "worker was stopping"), stop the zygote,
exit 0. A ``Cancelling`` run (the UI's Cancel) has its process group killed and is marked
``Cancelled``.

Longer than 300 lines: the loop's tasks share the slots, the running runs and the shutdown state,
and read best as one class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import httpx

from opsflow.core.errors import OpsflowError, ZygoteError
from opsflow.worker.claim import check_run, claim, exit_message, report_cancelled, report_crashed
from opsflow.worker.config import WorkerConfig
from opsflow.worker.watch import RunWatcher, Sighting
from opsflow.worker.zygote import Zygote

log = logging.getLogger("opsflow.worker")

#: How long a finished or skipped run id is ignored, so a stale poll answer does not re-claim it.
FORGET_AFTER_SECONDS = 120.0
#: A run scheduled this far ahead (seen in an event) is re-checked when due; later ones are left to the poll.
TIMER_HORIZON_SECONDS = 600.0
KILL_GRACE_SECONDS = 10.0


@dataclass
class Run:
    """A flow run this worker claimed."""

    flow_run_id: UUID
    label: str
    workdir: Path
    started: float = field(default_factory=time.monotonic)
    pid: int | None = None
    stop_reason: str = ""  # "cancel" or "shutdown" once the worker killed it


class WorkerService:
    """Serve one work pool until SIGTERM/SIGINT; see the module docstring."""

    def __init__(self, cfg: WorkerConfig):
        self.cfg = cfg
        self.client = None
        self.pool = None
        self.zygote: Zygote | None = None
        self.watcher: RunWatcher | None = None
        self._slots = asyncio.Semaphore(cfg.limit)
        self._queue: asyncio.Queue[Sighting] = asyncio.Queue()
        self._queued: set[UUID] = set()
        self._active: dict[UUID, Run | None] = {}  # being checked (None), or claimed
        self._forget: dict[UUID, float] = {}
        self._tasks: set[asyncio.Task] = set()
        self._flow_names: dict[UUID, str] = {}
        self._stopping = asyncio.Event()
        self._zygote_ready = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None) -> None:
        if not self._stopping.is_set():
            name = signal.Signals(signum).name if signum else "stop"
            log.info("%s received: no new runs; waiting up to %.0f s for %d running", name,
                     self.cfg.shutdown_timeout, len(self.running()))
        self._stopping.set()

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT (or :meth:`request_stop`); returns the exit code, 0."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        async with get_client() as client:
            self.client = client
            try:
                self.pool = await client.read_work_pool(self.cfg.pool)
            except ObjectNotFound as exc:
                raise OpsflowError(f"work pool {self.cfg.pool!r} does not exist on {client.api_url}; create it with "
                                   f"`opsflow deploy` or `prefect work-pool create {self.cfg.pool} --type process`"
                                   ) from exc
            except httpx.HTTPError as exc:
                raise OpsflowError(f"cannot reach the Prefect server at {client.api_url} ({type(exc).__name__}: "
                                   f"{exc}); start it (`opsflow stack up`) or set PREFECT_API_URL") from exc
            await self._start_zygote()
            await self._heartbeat_once()
            self.watcher = RunWatcher(
                client, pool_name=self.cfg.pool, pool_id=self.pool.id, queues=self.cfg.queues,
                on_sighting=self._sight, on_cancelling=self._cancel, running=self.running,
                poll_interval=self.cfg.poll_interval, fallback_poll_interval=self.cfg.fallback_poll_interval)
            log.info("worker %s serving work pool %s (%s), up to %d runs at a time", self.cfg.name, self.cfg.pool,
                     ", ".join(self.cfg.queues) or "all queues", self.cfg.limit)
            background = [asyncio.create_task(coro, name=name) for name, coro in (
                ("heartbeat", self._heartbeat_loop()), ("watch", self.watcher.run()),
                ("dispatch", self._dispatch()), ("zygote-supervisor", self._supervise_zygote()))]
            stop = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait([stop, *background], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and task.exception() is not None:
                    log.error("%s failed; stopping", task.get_name(), exc_info=task.exception())
            for task in background[1:]:
                task.cancel()
            await asyncio.gather(*background[1:], return_exceptions=True)
            await self._drain()
            background[0].cancel()
            await asyncio.gather(background[0], return_exceptions=True)
            stop.cancel()
            if self.zygote is not None:
                await self.zygote.stop()
        log.info("worker %s stopped", self.cfg.name)
        return 0

    async def _start_zygote(self) -> None:
        self._zygote_ready.clear()
        self.zygote = Zygote(modules=self.cfg.preload, paths=[str(self.cfg.project_root)])
        ready = await self.zygote.start()
        for module, error in ready.get("failed", {}).items():
            log.warning("zygote could not preload %s (runs will import it themselves): %s", module, error)
        log.info("zygote %s ready in %.1f s with %d modules preloaded", ready.get("pid"), ready.get("seconds", 0),
                 len(ready.get("loaded", [])))
        self._zygote_ready.set()

    async def _supervise_zygote(self) -> None:
        backoff = 1.0
        while True:
            await self.zygote.lost.wait()
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
        """Wait for claimed runs; kill what is still running after the timeout."""
        tasks = set(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.cfg.shutdown_timeout)
        if pending:
            runs = self.running_runs()
            log.warning("%d run(s) still running after %.0f s; killing them: %s", len(runs),
                        self.cfg.shutdown_timeout, ", ".join(r.label for r in runs))
            for run in runs:
                self._kill(run, "shutdown")
            await asyncio.wait(pending, timeout=KILL_GRACE_SECONDS + 30)

    async def _heartbeat_once(self) -> None:
        await self.client.send_worker_heartbeat(self.cfg.pool, self.cfg.name,
                                                heartbeat_interval_seconds=self.cfg.heartbeat_interval)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.heartbeat_interval)
            try:
                await self._heartbeat_once()
                self.pool = await self.client.read_work_pool(self.cfg.pool)
            except Exception as exc:  # noqa: BLE001 - httpx/Prefect errors: the server is down; keep trying
                log.warning("heartbeat to work pool %s failed: %s: %s", self.cfg.pool, type(exc).__name__, exc)

    # --- sightings and dispatch ------------------------------------------------------------

    def running(self) -> set[UUID]:
        return {run_id for run_id, run in self._active.items() if run is not None}

    def running_runs(self) -> list[Run]:
        return [run for run in self._active.values() if run is not None and run.pid is not None]

    def _sight(self, sighting: Sighting) -> None:
        run_id = sighting.flow_run_id
        if self._stopping.is_set() or run_id in self._active or run_id in self._queued:
            return
        forgotten_at = self._forget.get(run_id)
        if forgotten_at is not None and time.monotonic() - forgotten_at < FORGET_AFTER_SECONDS \
                and sighting.source != "timer":
            return
        self._queued.add(run_id)
        self._queue.put_nowait(sighting)

    async def _dispatch(self) -> None:
        while True:
            sighting = await self._queue.get()
            self._queued.discard(sighting.flow_run_id)
            if sighting.flow_run_id in self._active:
                continue
            await self._slots.acquire()
            await self._zygote_ready.wait()
            self._active[sighting.flow_run_id] = None
            task = asyncio.create_task(self._handle(sighting), name=f"run-{sighting.flow_run_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, sighting: Sighting) -> None:
        run_id = sighting.flow_run_id
        try:
            await self._claim_and_run(sighting)
        except Exception:
            log.exception("handling flow run %s failed", run_id)
        finally:
            if self._active.pop(run_id, None) is not None:  # it was claimed
                self._forget[run_id] = time.monotonic()
            self._prune_forget()
            self._slots.release()
            if self.watcher is not None:
                self.watcher.wake.set()

    async def _claim_and_run(self, sighting: Sighting) -> None:
        from prefect.exceptions import ObjectNotFound

        run_id = sighting.flow_run_id
        if self._stopping.is_set():
            return
        # Always read the run afresh: a sighting may have waited for a slot, and the server lets a
        # finished run go back to Pending (a re-run), so a stale "Scheduled" must never be claimed.
        try:
            flow_run = await self.client.read_flow_run(run_id)
        except ObjectNotFound:
            return
        verdict = check_run(flow_run, self.cfg.queues)
        if not verdict.ok:
            if 0 < verdict.due_in <= TIMER_HORIZON_SECONDS and sighting.source == "event":
                asyncio.get_running_loop().call_later(
                    verdict.due_in, self._sight, Sighting(run_id, "timer", time.time()))
            log.debug("not claiming %s: %s", run_id, verdict.reason)
            return
        (claimed, why, state), deployment = await asyncio.gather(
            claim(self.client, run_id), self._read_deployment(flow_run.deployment_id))
        if not claimed:
            log.info("flow run %s (%s) not claimed: %s", flow_run.name, run_id, why)
            return
        flow_run.state = state
        workdir = Path(tempfile.mkdtemp(prefix=f"opsflow-run-{str(run_id)[:8]}-", dir=self.cfg.workdir_root))
        run = Run(run_id, f"{flow_run.name} ({run_id})", workdir)
        self._active[run_id] = run
        try:
            try:
                child = await self.zygote.spawn(str(run_id), {
                    "flow_run_id": str(run_id), "workdir": str(workdir), "project_root": str(self.cfg.project_root),
                    "pool_template": self.pool.base_job_template if self.pool else None,
                    "flow_run": flow_run.model_dump(mode="json"),
                    "deployment": deployment.model_dump(mode="json") if deployment else None})
            except (ZygoteError, OSError) as exc:
                log.error("could not start flow run %s: %s", run.label, exc)
                await report_crashed(self.client, run_id, f"The worker could not start the run's process: {exc}")
                return
            run.pid = child.pid
            spawned_ms = (time.time() - sighting.seen) * 1000
            created = flow_run.created.timestamp() if flow_run.created else None
            log.info("claimed flow run %s of deployment %s in %.0f ms (seen by %s %s after creation); pid %d",
                     run.label, await self._deployment_name(deployment), spawned_ms, sighting.source,
                     f"{(sighting.seen - created) * 1000:.0f} ms" if created else "?", child.pid)
            annotate = asyncio.create_task(self._annotate(run_id, child.pid))
            code = await child.exited
            await asyncio.gather(annotate, return_exceptions=True)
            await self._finish(run, code)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _finish(self, run: Run, code: int | None) -> None:
        if run.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.pid, signal.SIGKILL)  # whatever the run started and left behind
        seconds = time.monotonic() - run.started
        if run.stop_reason == "cancel":
            await report_cancelled(self.client, run.flow_run_id, "Cancelled: the worker killed the run's process.")
            log.info("flow run %s cancelled after %.1f s", run.label, seconds)
            return
        if code == 0:
            log.info("flow run %s exited with code 0 after %.1f s", run.label, seconds)
            return
        if code is None:
            message = "Flow run process ended while the worker's zygote was down; its exit code is unknown."
            if await self._is_final(run.flow_run_id):
                log.info("flow run %s ended (exit code unknown) after %.1f s", run.label, seconds)
                return
        else:
            message = exit_message(code)
        if run.stop_reason == "shutdown":
            message += " The worker was stopping and killed it."
        crashed = await report_crashed(self.client, run.flow_run_id, message)
        log.warning("flow run %s exited with code %s after %.1f s: %s%s", run.label, code, seconds, message,
                    " Marked Crashed." if crashed else " It had already reached a final state.")

    async def _is_final(self, run_id: UUID) -> bool:
        flow_run = await self.client.read_flow_run(run_id)
        return bool(flow_run.state and flow_run.state.is_final())

    async def _annotate(self, run_id: UUID, pid: int) -> None:
        """What Prefect's workers record on a run they start: infrastructure pid and worker labels.

        A second later: these writes would otherwise compete with the run's own first requests.
        """
        await asyncio.sleep(1.0)
        try:
            await self.client.update_flow_run(run_id, infrastructure_pid=f"{socket.gethostname()}:{pid}")
            await self.client.update_flow_run_labels(run_id, {
                "prefect.worker.name": self.cfg.name, "prefect.worker.type": "opsflow",
                "prefect.work-pool.name": self.cfg.pool, "prefect.work-pool.id": str(self.pool.id)})
        except Exception as exc:  # noqa: BLE001 - labels are informative; the run goes on without them
            log.debug("could not annotate flow run %s: %s", run_id, exc)

    async def _read_deployment(self, deployment_id: UUID):
        """The run's deployment, read while the claim is in flight (``None`` if that fails: the child reads it)."""
        try:
            return await self.client.read_deployment(deployment_id)
        except Exception as exc:  # noqa: BLE001 - the child reads it again and reports what is wrong
            log.debug("could not read deployment %s: %s", deployment_id, exc)
            return None

    async def _deployment_name(self, deployment) -> str:
        """``flow/deployment`` for the log (flow names cached)."""
        if deployment is None:
            return "?"
        if deployment.flow_id not in self._flow_names:
            try:
                self._flow_names[deployment.flow_id] = (await self.client.read_flow(deployment.flow_id)).name
            except Exception:  # noqa: BLE001 - only for the log line
                return deployment.name
        return f"{self._flow_names[deployment.flow_id]}/{deployment.name}"

    def _prune_forget(self) -> None:
        horizon = time.monotonic() - FORGET_AFTER_SECONDS
        for run_id in [r for r, at in self._forget.items() if at < horizon]:
            del self._forget[run_id]

    # --- cancel and kill ----------------------------------------------------------------------

    def _cancel(self, run_id: UUID) -> None:
        run = self._active.get(run_id)
        if run is not None and run.pid is not None and not run.stop_reason:
            log.info("flow run %s is cancelling; killing its process group", run.label)
            self._kill(run, "cancel")

    def _kill(self, run: Run, reason: str) -> None:
        run.stop_reason = run.stop_reason or reason
        for kill in (os.killpg, os.kill):
            try:
                kill(run.pid, signal.SIGKILL)
                return
            except ProcessLookupError:
                continue
            except PermissionError:
                return
