"""A bounded cache of directories on the build server (the ML repositories' environments), safe for concurrent runs.

Layout under ``root``: ``<key>/`` is an entry, ``<key>/opsflow-entry.json`` (written last) marks it complete and
records its size; ``<key>.lock`` is its lock file. A run *uses* an entry under a shared ``flock`` for as long as it
needs it; it builds a missing entry, and evicts one, under the exclusive lock. So an entry is never built twice at
once, never half-built when used (a crashed build leaves no marker and is rebuilt), and never evicted while a run
uses it (eviction only takes entries whose exclusive lock it gets at once). Least recently used entries go first
once there are more than ``max_entries`` or they hold more than ``max_bytes``.

Why ``fcntl.flock`` and not Prefect's ``concurrency()``: the cache is a directory on one machine, used by every run
on it whatever its pool or deployment. A kernel lock is released when its process dies (a crashed or killed run never
leaves a held slot behind, which a global concurrency limit would until its lease expires), costs no API call on the
hot path (a cache hit takes ~1 ms), and gives shared/exclusive modes, which a concurrency limit does not. uv's own
cache uses file locks for the same reasons.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from opsflow.core.errors import LockTimeout

MARKER = "opsflow-entry.json"
POLL_S = 0.2


@dataclass
class CacheEntry:
    """A complete entry, held (shared lock) by the caller; ``built`` when this call built it."""

    key: str
    path: Path
    info: dict
    built: bool


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root``, each inode once (a venv hard-links files from uv's cache)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def plan_eviction(entries: list[tuple[str, float, int]], keep: str, max_entries: int, max_bytes: int) -> list[str]:
    """Keys to evict (pure), oldest use first, until at most ``max_entries`` entries and ``max_bytes`` remain.

    ``entries`` are ``(key, last_used, bytes)``; ``keep`` (the entry just built or used) is never chosen.
    """
    count, total = len(entries), sum(size for _, _, size in entries)
    out: list[str] = []
    for key, _used, size in sorted(entries, key=lambda e: e[1]):
        if count <= max_entries and total <= max_bytes:
            break
        if key == keep:
            continue
        out.append(key)
        count -= 1
        total -= size
    return out


class DirCache:
    """Entries keyed by a content hash under ``root``; see the module docstring."""

    def __init__(self, root: Path, max_entries: int = 8, max_bytes: int = 20 * 1024**3, wait_s: float = 1800):
        self.root = Path(root)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.wait_s = wait_s

    def _lock_path(self, key: str) -> Path:
        return self.root / f"{key}.lock"

    @contextlib.contextmanager
    def _locked(self, key: str, mode: int, wait_s: float | None) -> Iterator[int | None]:
        """The entry's lock file held in ``mode`` (``None`` when ``wait_s`` is 0 and it is taken).

        A lock file can be removed by an eviction between our open and our lock; then the lock we hold
        guards nothing, so the file is opened again until the lock is on the file the path names.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            fd = os.open(self._lock_path(key), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, mode | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if deadline is not None and time.monotonic() >= deadline:
                            if wait_s == 0:
                                os.close(fd)
                                fd = -1
                                yield None
                                return
                            raise LockTimeout(f"cache entry {key} under {self.root} stayed locked for {wait_s:.0f}s "
                                              f"(another run builds or uses it); re-run when it is done") from None
                        time.sleep(POLL_S)
                try:
                    same = os.fstat(fd).st_ino == os.stat(self._lock_path(key)).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    yield fd
                    return
            finally:
                if fd >= 0:
                    os.close(fd)  # closing the descriptor releases the lock

    def _info(self, key: str) -> dict | None:
        try:
            return json.loads((self.root / key / MARKER).read_text())
        except (FileNotFoundError, ValueError):
            return None

    @contextlib.contextmanager
    def entry(self, key: str, build: Callable[[Path], dict]) -> Iterator[CacheEntry]:
        """Hold ``key``'s entry (shared lock) for the ``with`` block, building it first when it is missing.

        ``build(path)`` fills the empty directory ``path`` and returns facts to record (JSON-able); it runs
        under the entry's exclusive lock, so concurrent runs of one key wait for one build. An error in it
        leaves no entry behind and propagates.

        Raises:
            LockTimeout: another run held the entry exclusively for longer than ``wait_s``.
        """
        built = False
        while True:
            with self._locked(key, fcntl.LOCK_SH, self.wait_s):
                info = self._info(key)
                if info is not None:
                    os.utime(self.root / key / MARKER)  # last use, for eviction
                    yield CacheEntry(key, self.root / key, info, built)
                    return
            with self._locked(key, fcntl.LOCK_EX, self.wait_s):
                if self._info(key) is None:
                    self._build(key, build)
                    built = True
            # the exclusive lock is given up and the shared one taken again: an eviction in between is seen
            # (no marker) and the entry is built again, so a used entry is always complete
            self.evict(keep=key)

    def _build(self, key: str, build: Callable[[Path], dict]) -> None:
        path = self.root / key
        _remove(path, self.root)  # what a crashed build left
        path.mkdir(parents=True)
        started = time.monotonic()
        try:
            info = dict(build(path) or {})
        except BaseException:
            _remove(path, self.root)
            raise
        info.update(key=key, bytes=tree_bytes(path), build_s=round(time.monotonic() - started, 2))
        tmp = path / f".{MARKER}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(info))
        tmp.replace(path / MARKER)

    def entries(self) -> list[tuple[str, float, int]]:
        """``(key, last_used, bytes)`` of every complete entry."""
        out = []
        for marker in self.root.glob(f"*/{MARKER}"):
            try:
                used = marker.stat().st_mtime
                size = int(json.loads(marker.read_text()).get("bytes", 0))
            except (FileNotFoundError, ValueError):
                continue
            out.append((marker.parent.name, used, size))
        return out

    def evict(self, keep: str = "") -> list[str]:
        """Remove least recently used entries beyond the bounds, skipping any a run holds, and what crashed
        builds left; the keys removed."""
        removed = []
        complete = {key for key, _, _ in self.entries()}
        for path in self.root.iterdir():
            if path.name.startswith(".trash-"):
                shutil.rmtree(path, ignore_errors=True)
            elif path.is_dir() and path.name not in complete and path.name != keep:
                with self._locked(path.name, fcntl.LOCK_EX, 0) as fd:
                    if fd is not None and self._info(path.name) is None:
                        _remove(path, self.root)  # no build holds it: a crashed build's leftovers
        for key in plan_eviction(self.entries(), keep, self.max_entries, self.max_bytes):
            with self._locked(key, fcntl.LOCK_EX, 0) as fd:
                if fd is None:
                    continue  # in use (or being built): it stays
                _remove(self.root / key, self.root)
                self._lock_path(key).unlink(missing_ok=True)
                removed.append(key)
        return removed


def _remove(path: Path, root: Path) -> None:
    """Remove ``path``: renamed aside first, so a half-deleted tree never sits under an entry's name."""
    if not path.exists():
        return
    trash = root / f".trash-{uuid.uuid4().hex}"
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
