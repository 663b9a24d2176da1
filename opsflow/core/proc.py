"""The one way opsflow runs a command: argv list, timeout, checked exit code, redacted output.

Commands that run code from a repository (builds, tests, dependency installs) get a *scrubbed*
environment (``isolated=True``): PATH, HOME, the locale and time zone, and only what the caller
passes; never the worker's variables (the Prefect API URL and auth, stack settings, database URLs,
cloud credentials), so a pull request cannot read them from its environment. Where ``unshare``
works (root, or unprivileged user namespaces) they also run in a PID namespace of their own with
its own ``/proc``: the run's and the worker's processes (and their environments in
``/proc/<pid>/environ``) are out of sight, and the namespace dies with its command
(``--kill-child``). ``OPSFLOW_SANDBOX=off`` turns that off.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from opsflow.core.errors import CommandFailed, InvalidInput
from opsflow.core.redact import redact
from opsflow.core.threads import start_thread

_TAIL_LINES = 40
#: What a scrubbed environment keeps from the caller's: the command search path, the locale and time zone.
SCRUBBED_KEEP = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM")
SCRUBBED_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


_SANDBOX: list[list[str]] = []


def sandbox_prefix() -> list[str]:
    """``unshare`` arguments that give a command its own PID namespace and ``/proc``, or ``[]`` where that
    does not work here (probed once per process)."""
    if os.environ.get("OPSFLOW_SANDBOX", "auto") == "off":
        return []
    if not _SANDBOX:
        found: list[str] = []
        base = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
        for prefix in (base, [*base[:1], "--user", "--map-root-user", *base[1:]]):
            try:
                done = subprocess.run([*prefix, "true"], capture_output=True, timeout=10, check=False)
            except (OSError, subprocess.TimeoutExpired):
                break
            if done.returncode == 0:
                found = prefix
                break
        _SANDBOX.append(found)
    return list(_SANDBOX[0])


def scrubbed_environment(home: Path | str, extra: Mapping[str, str] | None = None,
                         environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a command that runs a repository's code: PATH, HOME=``home``, locale, ``extra``.

    ``LC_*`` variables are kept; everything else of ``environ`` (the worker's: ``PREFECT_*``,
    ``OPSFLOW_*``, ``AWS_*``, ``DOCKER_*``, tokens) is dropped.
    """
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k in SCRUBBED_KEEP or k.startswith("LC_")}
    # Not opsflow's own virtualenv: a repository's `python` must not be the one that has Prefect and its settings.
    own_bin = str(Path(sys.prefix) / "bin") if sys.prefix != sys.base_prefix else None
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", SCRUBBED_PATH).split(os.pathsep)
                                  if p and p != own_bin) or SCRUBBED_PATH
    env.setdefault("LANG", "C.UTF-8")
    env["HOME"] = str(home)
    env["USER"] = env["LOGNAME"] = os.environ.get("USER") or "opsflow"
    env["TMPDIR"] = str(home)
    env.update(extra or {})
    return env


def run(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
    timeout: float = 900,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
    on_line: Callable[[str], None] | None = None,
    hint: str = "",
    stdin_text: str | None = None,
    isolated: bool = False,
) -> str:
    """Run ``argv`` (never through a shell) and return its combined, redacted output.

    Output is streamed line by line to ``logger`` (redacted) while the command runs.
    ``env`` is added to the current environment, or, with ``isolated``, is the whole environment
    (make it with :func:`scrubbed_environment`). On timeout the whole process group is killed.
    Raises :class:`CommandFailed` with the redacted output tail on failure.
    """
    if isinstance(argv, (str, bytes)) or not argv or not all(isinstance(a, str) for a in argv):
        raise InvalidInput("a command must be a non-empty list of strings, not a shell string")
    if isolated:
        if not env or "HOME" not in env or "PATH" not in env:
            raise InvalidInput("an isolated command needs its whole environment (scrubbed_environment())")
        full_env = dict(env)
    else:
        full_env = dict(os.environ)
        full_env.update(env or {})
    argv = list(argv)
    try:
        proc = subprocess.Popen(
            [*sandbox_prefix(), *argv] if isolated else argv,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise CommandFailed(argv, 127, "", hint=f"{argv[0]!r} is not installed or not on PATH") from exc

    lines: list[str] = []
    tail: deque[str] = deque(maxlen=_TAIL_LINES)

    def pump() -> None:
        for raw in proc.stdout or ():
            line = redact(raw.rstrip("\n"), secrets)
            lines.append(line)
            tail.append(line)
            if logger is not None:
                logger.info("%s", line)
            if on_line is not None:
                on_line(line)

    reader = start_thread(pump, name=f"output-{Path(argv[0]).name}")  # logs in the caller's run context
    if stdin_text is not None:  # e.g. a script for a remote shell: never in argv
        try:
            proc.stdin.write(stdin_text)
            proc.stdin.close()
        except BrokenPipeError:
            pass
    try:
        returncode: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        returncode = None
    reader.join(timeout=5)
    if returncode != 0:
        raise CommandFailed(argv, returncode, "\n".join(tail), hint=hint)
    return "\n".join(lines)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def spawn_detached(argv: Sequence[str]) -> int:
    """Start ``argv`` in a session of its own with no input or output and do not wait for it (a cleanup
    that must not hold up the caller, e.g. deleting a large tree). Returns its pid."""
    if isinstance(argv, (str, bytes)) or not argv or not all(isinstance(a, str) for a in argv):
        raise InvalidInput("a command must be a non-empty list of strings, not a shell string")
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    start_thread(proc.wait, name=f"reap-{Path(argv[0]).name}")  # no zombie while this process lives
    return proc.pid
