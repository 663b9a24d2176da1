"""A run's working directories: made with an owner record, removed on every way out, swept when orphaned.

A workspace is ``<tmp>/opsflow-run-<random>/`` holding ``src/`` (the checkout, with its env files),
``home/`` (the build's ``HOME`` and ``TMPDIR``) and whatever the run unpacks. It records the process
that owns it (pid and start time), so a workspace whose run died without cleaning up (killed, crashed
worker) is removed by the next run on the machine (:func:`sweep_orphans`).

Removing one first deletes the secret files (the env files a run wrote, then any ``.env*`` the
checkout holds at its top levels), then moves the rest aside with one rename and deletes it in a
process of its own: a run does not wait for a large ``node_modules`` to be deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from prefect import get_run_logger, task

from opsflow.core.errors import InvalidInput
from opsflow.core.proc import spawn_detached

PREFIX = "opsflow-run-"
OWNER = ".opsflow-owner"
TRASH = "opsflow-trash-"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def new_workspace(root: Path | None = None) -> Path:
    """A fresh workspace directory (mode 0700) that records this process as its owner."""
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))
    (path / OWNER).write_text(f"{os.getpid()} {_start_time(os.getpid()) or ''}\n")
    (path / "home").mkdir(mode=0o700)
    return path


def owner_alive(workspace: Path) -> bool:
    """Whether the process that made ``workspace`` still runs (a reused pid with another start time does not count).

    A workspace with no owner record (made by another program, or an older opsflow) counts as alive: it is
    not ours to remove.
    """
    try:
        pid_text, _, started = (workspace / OWNER).read_text().strip().partition(" ")
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    now = _start_time(pid)
    return now is not None and (not started or now == started)


def _secret_files(path: Path) -> list[Path]:
    """Env files in a workspace: ``.env*`` at most three levels under its checkout (component directories)."""
    found = []
    for base in (path, path / "src"):
        for depth in ("", "*/", "*/*/", "*/*/*/"):
            found += [p for p in base.glob(f"{depth}.env*") if p.is_file() and not p.is_symlink()]
    return found


def discard(path: Path, secret_files: list[Path] = ()) -> None:
    """Delete ``secret_files`` and any env file of the workspace now, the rest in a detached process."""
    for secret in [*secret_files, *_secret_files(path)]:
        with contextlib.suppress(FileNotFoundError):
            secret.unlink()
    trash = path.parent / f"{TRASH}{uuid.uuid4().hex}"
    try:
        os.rename(path, trash)
    except OSError:  # another file system or already gone: delete in place
        shutil.rmtree(path, ignore_errors=True)
        return
    spawn_detached(["rm", "-rf", "--one-file-system", "--", str(trash)])


def sweep_orphans(root: Path | None = None) -> list[str]:
    """Remove workspaces whose owner process is gone, and trash no deleter finished; returns what was removed."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for path in root.glob(f"{PREFIX}*"):
        if path.is_dir() and not path.is_symlink() and not owner_alive(path):
            discard(path)
            removed.append(str(path))
    for path in root.glob(f"{TRASH}*"):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink() and not _being_deleted(path):
                spawn_detached(["rm", "-rf", "--one-file-system", "--", str(path)])
    return removed


def _being_deleted(path: Path) -> bool:
    """Whether a deleter still works on ``path`` (a process whose argv names it)."""
    needle = str(path).encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (proc / "cmdline").read_bytes():
                    return True
    return False


@task(name="cleanup-workspace", task_run_name="cleanup-workspace")
def cleanup_workspace(paths: list[Path], dry_run: bool = False) -> list[str]:
    """Delete the given run directories (only ones under the temp dir); return what was (or would be) removed.

    Env files go at once; the rest is renamed aside and deleted by a process of its own.
    """
    logger = get_run_logger()
    root = Path(tempfile.gettempdir()).resolve()
    removed = []
    for path in map(Path, paths):
        resolved = path.resolve()
        if resolved.name == "src" and (resolved.parent / OWNER).is_file():
            resolved = resolved.parent  # a checkout: its whole workspace goes (home, unpacked trees)
        if root not in resolved.parents:
            raise InvalidInput(f"refusing to delete {path}: workspaces live under {root}")
        if not resolved.exists():
            continue
        if dry_run:
            logger.info("dry run: would remove %s", resolved)
        else:
            discard(resolved)
            logger.info("removed %s", resolved)
        removed.append(str(resolved))
    return removed
