"""Starting, watching and stopping the stack's background processes.

Every process the stack starts carries ``OPSFLOW_STACK_HOME=<home>`` in its environment.
Children inherit it, so ``down`` can find and stop everything the stack started, even
processes that left its process group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections import deque
from pathlib import Path

from opsflow.core.pids import alive, start_ticks

__all__ = ["alive", "exited", "log_tail", "marked_pids", "port_free", "spawn", "start_ticks", "stop", "sweep"]

MARKER = "OPSFLOW_STACK_HOME"


def spawn(argv: list[str], *, env: dict[str, str], log_path: Path, home: Path, cwd: Path | None = None,
          clean_env: bool = False, user: str | None = None) -> int:
    """Start ``argv`` in its own session with output to ``log_path``; return its pid.

    The process gets this process's environment plus ``env``, or with ``clean_env`` only ``env``;
    with ``user``, it runs as that system user (and in the home's root, which it may not read).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**({} if clean_env else os.environ), **env, MARKER: str(home)}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, env=full_env, cwd=cwd or ("/" if user else home), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, user=user, group=user,
        )
    return proc.pid


def exited(pid: int) -> bool:
    """True when ``pid`` (a child of ours or not) has exited; reaps it if it is our child."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return True
    except ChildProcessError:
        pass
    return not alive(pid)


def stop(pid: int, *, grace: float = 15.0) -> None:
    """SIGTERM the leader, then its process group; SIGKILL whatever is left after ``grace``."""
    for target, sig in ((pid, signal.SIGTERM),):
        try:
            os.kill(target, sig)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not exited(pid):
        time.sleep(0.1)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        time.sleep(0.5 if sig == signal.SIGTERM else 0)
    exited(pid)


def marked_pids(home: Path) -> list[int]:
    """Pids of live processes whose environment carries this stack's marker."""
    needle = f"{MARKER}={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def sweep(home: Path, *, grace: float = 5.0) -> list[int]:
    """Stop every remaining process carrying this stack's marker; return the pids found."""
    pids = marked_pids(home)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        exited(pid)
    return pids


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) != 0


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip()
    except OSError:
        return "(no log written)"
