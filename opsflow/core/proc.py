"""The one way opsflow runs a command: argv list, timeout, checked exit code, redacted output."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from opsflow.core.errors import CommandFailed, InvalidInput
from opsflow.core.redact import redact
from opsflow.core.threads import start_thread

_TAIL_LINES = 40


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
    inherit_env: bool = True,
) -> str:
    """Run ``argv`` (never through a shell) and return its combined, redacted output.

    Output is streamed line by line to ``logger`` (redacted) while the command runs.
    ``env`` is added to the current environment (with ``inherit_env=False`` it is the whole environment:
    nothing of this process's reaches the command). On timeout the whole process group is
    killed. Raises :class:`CommandFailed` with the redacted output tail on failure.
    """
    if isinstance(argv, (str, bytes)) or not argv or not all(isinstance(a, str) for a in argv):
        raise InvalidInput("a command must be a non-empty list of strings, not a shell string")
    full_env = dict(os.environ) if inherit_env else {}
    if env:
        full_env.update(env)
    argv = list(argv)
    try:
        proc = subprocess.Popen(
            argv,
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
