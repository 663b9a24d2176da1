"""Is that process still the one we started? A pid plus its start time, read from ``/proc``.

A pid alone is not an identity: once a process has exited its pid may be given to another one.
The kernel's start time of the process (clock ticks since boot, field 22 of ``/proc/<pid>/stat``)
tells the two apart, so every record of a process opsflow started (the stack's services, a
worker's run processes) keeps both.
"""

from __future__ import annotations

from pathlib import Path


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def alive(pid: int, ticks: int | None = None) -> bool:
    """True when ``pid`` runs and, if ``ticks`` is given, is still the process that started at ``ticks``."""
    current = start_ticks(pid)
    return current is not None and (ticks is None or current == ticks)
