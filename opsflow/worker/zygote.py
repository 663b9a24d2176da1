"""The zygote: a process that has imported Prefect and the flow modules once, and forks one child per run.

(Over 300 lines: the zygote's side and the worker's side of the one socket protocol are kept together.)

Starting a flow run the stock way costs a fresh interpreter that imports Prefect (~5 s here).
The zygote pays that once: the worker starts ``python -m opsflow.worker.zygote``, which imports
the engine modules and the preload list, then waits on a socket for ``spawn`` requests and
answers each with ``os.fork()``. The forked child returns out of the zygote's loop into
:func:`main`, starts its own session and runs the flow run (:mod:`opsflow.worker.runner`),
then exits through the normal interpreter shutdown (Prefect's log and event workers drain
there, as in ``python -m prefect.engine``).

Libraries the flows' tasks import only when they run (boto3, GitPython, the Docker SDK, MLflow, DVC: the
blocks and tasks import them lazily, so an edge node without MLflow still imports every flow module) are
the ``--warm`` list: once ``ready`` is sent, the zygote imports those that are installed, one at a time
whenever no request waits (a run asked for meanwhile is forked first, with what is imported so far), and
says ``warmed``. They are not preloaded before ``ready`` so a worker (and ``opsflow stack up``) does not wait
for them. A library whose import starts a thread would make forking unsafe: ``warmed`` names it and the
worker warns. MLflow's two (numpy's OpenBLAS pool, pyarrow's jemalloc background thread) are not started at
all: the warm imports run with
``OPENBLAS_NUM_THREADS=1`` and ``JE_ARROW_MALLOC_CONF=background_thread:false`` (read once, when those libraries
load), unset again afterwards so a run's own subprocesses (an experiment's training) get their defaults.
Measured (``python -c "import prefect, X"``, 2 cores, load ~3): MLflow's client and models +2.1/+3.4 s, DVC +1.6 s,
boto3 +1.4 s, the Docker SDK +0.7 s, GitPython +0.4 s in every run that uses them; a forked MLOps PR run on
the test stack spent 23 s in its first MLflow call.

Forking is only safe from a clean process, so the zygote stays single-threaded: it imports
modules, and never opens an HTTP client, an event loop or a thread. It reaps its children and
reports each exit code to the worker (negative: killed by that signal), since only a parent can
read it. The zygote runs in its own session: a Ctrl-C in the worker's terminal reaches the worker
only, which decides what happens to the runs.

Protocol, one JSON object per line over a socketpair:
``{"op": "spawn", "key": K, "job": {...}}`` from the worker; ``{"op": "ready", ...}``,
``{"op": "spawned", "key": K, "pid": P}``, ``{"op": "exited", "pid": P, "code": C}`` and ``{"op": "warmed", ...}``
back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import importlib.util
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opsflow.core.errors import ZygoteError
from opsflow.worker.runner import changed_file

log = logging.getLogger("opsflow.worker.zygote")

#: Imported by every zygote: what the child needs to run a flow run, so no child imports it again.
ENGINE_MODULES = (
    "prefect",
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.flows",
    "prefect.tasks",
    "prefect.futures",
    "prefect.results",
    "prefect.states",
    "prefect.artifacts",
    "prefect.task_runners",
    "prefect.client.orchestration",
    "prefect.events.clients",
    "prefect.events.worker",
    "prefect.logging.handlers",
    "prefect.deployments.steps",
    "prefect.deployments.steps.core",
    "prefect.deployments.steps.pull",
    "prefect.runner.storage",
    "prefect.filesystems",
    "prefect.blocks.core",
    "prefect.utilities.importtools",
    "prefect.utilities.visualization",
    "prefect.runtime",
    "prefect.runtime.flow_run",
    "prefect.runtime.task_run",
    "anyio._backends._asyncio",
    "anyio.streams.memory",
    "anyio.streams.stapled",
    "anyio.streams.tls",
    "pydantic.v1",
    "rich._emoji_codes",
    "opsflow.worker.runner",
    "opsflow.worker.prefect_adapter",
    "opsflow.core.paths",  # the runner's check of a deployment's pinned commit
    "opsflow.core.version",
)


# --- zygote side (its own process) ---------------------------------------------------------


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def preload(modules: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Import each module; a module that fails is reported, never fatal (a run then imports it itself)."""
    loaded, failed = [], {}
    for name in modules:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except BaseException as exc:  # noqa: BLE001 - a flow module may raise anything at import, even SystemExit
            failed[name] = f"{type(exc).__name__}: {exc}"
    return loaded, failed


def _reap(conn: socket.socket, children: set[int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        with contextlib.suppress(OSError):  # the worker may be gone
            _send(conn, {"op": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def kill_children(children: set[int]) -> None:
    """SIGKILL each child's process group (a run and whatever it started), then reap them."""
    for pid in children:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
                break
            except ProcessLookupError:
                continue
            except PermissionError:
                break
    for pid in list(children):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        children.discard(pid)


#: Set (unless the environment sets them) while the zygote warms: libraries that would start native threads at
#: load (numpy's OpenBLAS, pyarrow's jemalloc) start none.
NO_THREADS_ENV = {"OPENBLAS_NUM_THREADS": "1", "JE_ARROW_MALLOC_CONF": "background_thread:false"}


def _warm_one(name: str, warmed: dict) -> None:
    """Import ``name`` when its package is installed (else note it as skipped); never raises."""
    if importlib.util.find_spec(name.split(".", 1)[0]) is None:
        warmed["skipped"].append(name)
        return
    try:
        importlib.import_module(name)
        warmed["loaded"].append(name)
    except BaseException as exc:  # noqa: BLE001 - as preload: a run then imports it itself
        warmed["failed"][name] = f"{type(exc).__name__}: {exc}"
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    if threads > 1 and not warmed["threads"]:
        warmed["threads"] = {name: threads}  # the first import that left a thread running


def _fork_requested(conn: socket.socket, buffer: bytes, children: set[int]) -> tuple[bytes, dict | None]:
    """Fork a child for each complete ``spawn`` line of ``buffer``; returns what is left of it, and in a forked
    child its request."""
    while b"\n" in buffer:
        line, buffer = buffer.split(b"\n", 1)
        request = json.loads(line)
        if request.get("op") != "spawn":
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            return buffer, request
        children.add(pid)
        _send(conn, {"op": "spawned", "key": request["key"], "pid": pid})
    return buffer, None


def serve(conn: socket.socket, warm: Sequence[str] = ()) -> dict | None:
    """Fork one child per ``spawn`` request until the worker hangs up; import the ``warm`` modules while
    no request waits.

    Returns ``None`` in the zygote when the worker is gone, and the request in a forked child.
    A worker that hangs up while runs are still running has died (a worker that stops waits for
    its runs, or kills them, first): its runs are killed too, since nothing would cancel them,
    enforce their timeout or remove their working directories any more. The next worker started
    with the same name reports them Crashed (:mod:`opsflow.worker.records`).
    """
    children: set[int] = set()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the select below
    selector = selectors.DefaultSelector()
    selector.register(conn, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    buffer = b""
    pending, warmed, began = list(warm), {"loaded": [], "failed": {}, "skipped": [], "threads": {}}, time.monotonic()
    quieted = [k for k in NO_THREADS_ENV if k not in os.environ] if pending else []
    os.environ.update({k: NO_THREADS_ENV[k] for k in quieted})
    try:
        while True:
            events = selector.select(timeout=0 if pending else None)
            if not events and pending:
                _warm_one(pending.pop(0), warmed)
                if not pending:
                    for var in quieted:
                        os.environ.pop(var, None)
                    gc.collect()
                    gc.freeze()  # as after the preload: children do not copy these pages
                    _send(conn, {"op": "warmed", **warmed, "seconds": round(time.monotonic() - began, 3)})
                continue
            for key, _ in events:
                if key.fileobj == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                    _reap(conn, children)
                    continue
                try:
                    data = conn.recv(1 << 16)
                except ConnectionResetError:
                    data = b""
                if not data:
                    kill_children(children)
                    return None
                buffer, request = _fork_requested(conn, buffer + data, children)
                if request is not None:  # in a child forked during the warm-up: its subprocesses get the defaults
                    for var in quieted:
                        os.environ.pop(var, None)
                    return request
            _reap(conn, children)  # a SIGCHLD that raced the select
    finally:
        selector.close()
        signal.set_wakeup_fd(old_wakeup)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.close(wake_r)
        os.close(wake_w)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m opsflow.worker.zygote")
    parser.add_argument("--fd", type=int, required=True, help="the socket shared with the worker")
    parser.add_argument("--path", action="append", default=[], help="directory put first on sys.path")
    parser.add_argument("--warm", action="append", default=[],
                        help="module to import once ready, while no run is asked for (skipped when not installed)")
    parser.add_argument("modules", nargs="*", help="modules to import before serving")
    args = parser.parse_args(argv)
    for path in reversed(args.path):
        if path not in sys.path:
            sys.path.insert(0, path)
    conn = socket.socket(fileno=args.fd)
    started = time.monotonic()
    loaded, failed = preload([*ENGINE_MODULES, *args.modules])
    from opsflow.worker.prefect_adapter import share_client_tls_contexts

    share_client_tls_contexts()  # every run forked from here reuses the Prefect clients' TLS context
    if args.path:
        from opsflow.worker.runner import remember_preloaded

        remember_preloaded(Path(args.path[0]))
    from opsflow.worker.runner import rehearse

    rehearse()
    # Objects that exist now are never collected; children then do not touch (and copy) their pages.
    gc.collect()
    gc.freeze()
    from opsflow.worker.runner import PRELOADED

    _send(conn, {"op": "ready", "pid": os.getpid(), "loaded": loaded, "failed": failed,
                 "seconds": round(time.monotonic() - started, 3), "files": PRELOADED})
    request = serve(conn, args.warm)
    if request is None:
        return 0
    # In the forked child from here on.
    conn.close()
    os.setsid()
    from opsflow.worker.runner import execute

    return execute(request["job"])


# --- worker side ---------------------------------------------------------------------------


@dataclass
class Child:
    """A forked run process: its pid, and its exit code once the zygote reaped it.

    The code is ``None`` when the zygote died first (the child was then watched by pidfd).
    """

    pid: int
    exited: asyncio.Future


@dataclass
class Zygote:
    """The worker's handle on its zygote process (asyncio)."""

    modules: Sequence[str]
    paths: Sequence[str]
    #: Imported by the zygote after ``ready`` while it is idle (see the module docstring).
    warm: Sequence[str] = ()
    #: Variables set in the zygote's environment (and so its runs') beyond the worker's own.
    env: dict[str, str] = field(default_factory=dict)
    ready: dict = field(default_factory=dict)
    #: The zygote's ``warmed`` message, once it has imported the ``warm`` modules.
    warmed: dict = field(default_factory=dict)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    _proc: subprocess.Popen | None = None
    _writer: asyncio.StreamWriter | None = None
    _reader_task: asyncio.Task | None = None
    _spawning: dict[str, asyncio.Future] = field(default_factory=dict)
    _children: dict[int, asyncio.Future] = field(default_factory=dict)
    _closing: bool = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        return self._reader_task is not None and not self._reader_task.done() and not self.lost.is_set()

    @property
    def idle(self) -> bool:
        """No child of this zygote is running or being forked."""
        return not self._children and not self._spawning

    def changed_file(self) -> str | None:
        """A project file the zygote preloaded that changed on disk since (or is gone), else None."""
        return changed_file(self.ready.get("files") or {})

    async def start(self, timeout: float = 180) -> dict:
        """Start the zygote and wait until it has imported everything; returns its ``ready`` message."""
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-m", "opsflow.worker.zygote", "--fd", str(theirs.fileno())]
        for path in self.paths:
            argv += ["--path", str(path)]
        for module in self.warm:
            argv += ["--warm", module]
        argv += list(self.modules)
        try:
            self._proc = subprocess.Popen(
                argv, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=self.paths[0] if self.paths else None, env={**os.environ, **self.env} if self.env else None)
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=ours, limit=1 << 20)
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        except TimeoutError as exc:
            await self.stop()
            raise ZygoteError(f"the zygote did not finish importing within {timeout:.0f} s") from exc
        if not line:
            code = await asyncio.to_thread(self._proc.wait, 10)
            raise ZygoteError(f"the zygote exited with {code} while importing; see the worker's stderr")
        self.ready = json.loads(line)
        self._reader_task = asyncio.create_task(self._read(reader), name="zygote-reader")
        return self.ready

    async def spawn(self, key: str, job: dict, timeout: float = 30) -> Child:
        """Fork a child for ``job``."""
        if not self.alive or self._writer is None:
            raise ZygoteError("the zygote is not running")
        future = asyncio.get_running_loop().create_future()
        self._spawning[key] = future
        try:
            self._writer.write(json.dumps({"op": "spawn", "key": key, "job": job}).encode() + b"\n")
            await self._writer.drain()
            # The exit future travels with the pid: a child that dies at once is reaped (and
            # dropped from ``_children``) before this coroutine resumes.
            pid, exited = await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise ZygoteError(f"the zygote did not fork within {timeout:.0f} s") from exc
        finally:
            self._spawning.pop(key, None)
        return Child(pid, exited)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        try:
            while line := await reader.readline():
                message = json.loads(line)
                if message["op"] == "spawned":
                    # Registered before the spawner resumes: the child's exit may be the next line.
                    exited = self._children[message["pid"]] = loop.create_future()
                    future = self._spawning.get(message["key"])
                    if future is not None and not future.done():
                        future.set_result((message["pid"], exited))
                elif message["op"] == "exited":
                    exited = self._children.pop(message["pid"], None)
                    if exited is not None and not exited.done():
                        exited.set_result(message["code"])
                elif message["op"] == "warmed":
                    self._warmed(message)
        except Exception:
            log.exception("reading from the zygote failed")
        for future in self._spawning.values():
            if not future.done():
                future.set_exception(ZygoteError("the zygote went away"))
        for pid, exited in list(self._children.items()):
            _watch_orphan(pid, exited)
        self._children.clear()
        if not self._closing:
            self.lost.set()

    def _warmed(self, message: dict) -> None:
        self.warmed = message
        for module, error in message.get("failed", {}).items():
            log.warning("zygote could not import %s (runs will import it themselves): %s", module, error)
        for module, threads in message.get("threads", {}).items():
            log.warning("importing %s left the zygote with %d threads: forking runs from it may deadlock; "
                        "leave it out of --warm", module, threads)
        log.info("zygote imported %s in %.1f s%s", ", ".join(message["loaded"]) or "nothing", message["seconds"],
                 f" (not installed: {', '.join(message['skipped'])})" if message["skipped"] else "")

    async def stop(self, timeout: float = 10) -> None:
        """Hang up; the zygote exits (running children, if any, carry on)."""
        self._closing = True
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._reader_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader_task, timeout)
        if self._proc is not None:
            try:
                await asyncio.to_thread(self._proc.wait, timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                await asyncio.to_thread(self._proc.wait)


class Zygotes:
    """The worker's current zygote, replaced when the project code it preloaded changes on disk (a ``git pull``
    of the worker's checkout).

    A run forked from a zygote whose code changed imports the current code itself, which is right but slow
    (0.5 s more per run on the local stack, until the worker restarted). :meth:`refresh_if_changed`, called
    before each fork (it looks at most once a second: one ``stat`` per preloaded file), starts a new zygote in
    the background; runs forked meanwhile come from the old one. Once the new one is ready it takes over, and
    the old one is stopped as soon as none of its runs is left (stopping a zygote kills its children).
    """

    CHECK_EVERY_S = 1.0
    #: After a replacement that did not start, the next attempt waits this long (not one a second).
    RETRY_AFTER_FAILURE_S = 60.0

    def __init__(self, make):
        self._make = make
        self.current: Zygote | None = None
        self.retired: list[Zygote] = []
        self.replacing: asyncio.Task | None = None
        #: Set when ``current`` was replaced (the worker's supervisor watches the new one's ``lost``).
        self.swapped = asyncio.Event()
        self._checked = 0.0

    async def start(self) -> dict:
        """Start a zygote as the current one; returns its ``ready`` message."""
        zygote = self._make()
        ready = await zygote.start()
        self.current = zygote
        return ready

    def refresh_if_changed(self) -> str | None:
        """Start replacing the current zygote when a file it preloaded changed; returns that file (or None)."""
        now = time.monotonic()
        if self.current is None or self.replacing is not None or now - self._checked < self.CHECK_EVERY_S:
            return None
        self._checked = now
        changed = self.current.changed_file()
        if changed is not None:
            log.info("%s changed since the zygote %s imported it: starting a new zygote (runs forked meanwhile "
                     "import the current code themselves)", changed, self.current.pid)
            self.replacing = asyncio.get_running_loop().create_task(self._replace(), name="zygote-replace")
        return changed

    async def _replace(self) -> None:
        try:
            fresh = self._make()
            try:
                ready = await fresh.start()
            except (ZygoteError, OSError) as exc:
                log.error("the new zygote did not start (%s); runs keep coming from the old one, and a new one is "
                          "tried again in %.0f s", exc, self.RETRY_AFTER_FAILURE_S)
                self._checked = time.monotonic() + self.RETRY_AFTER_FAILURE_S - self.CHECK_EVERY_S
                return
            old, self.current = self.current, fresh
            if old is not None:
                old._closing = True  # retired: its end is not a loss to recover from
                self.retired.append(old)
            self.swapped.set()
            log.info("zygote %s ready in %.1f s with the current code; the old one (%s) stops once its runs end",
                     ready.get("pid"), ready.get("seconds", 0), old.pid if old else "?")
            await self.retire_idle()
        finally:
            self.replacing = None

    async def retire_idle(self) -> None:
        """Stop the replaced zygotes none of whose runs is left."""
        for zygote in [z for z in self.retired if z.idle]:
            self.retired.remove(zygote)
            await zygote.stop()

    async def stop(self) -> None:
        """Stop every zygote (the worker's runs are over or killed by then)."""
        if self.replacing is not None:
            self.replacing.cancel()
            with contextlib.suppress(BaseException):
                await self.replacing
        for zygote in [*self.retired, *([self.current] if self.current else [])]:
            await zygote.stop()
        self.retired.clear()


def _watch_orphan(pid: int, exited: asyncio.Future) -> None:
    """Resolve ``exited`` with ``None`` when ``pid`` ends: its parent, the zygote, is gone."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        if not exited.done():
            exited.set_result(None)
        return

    def done() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, done)


if __name__ == "__main__":
    sys.exit(main())
