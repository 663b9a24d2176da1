"""Dependency caches on the build server: installed trees keyed by the lockfile's hash.

An entry is ``<root>/trees/<manager>/<key>/tree`` (a ``node_modules`` or a relocatable ``.venv``) with
``meta.json`` (its size, when it was saved and last used). The key is a sha256 of everything that
decides the installed tree: the manager and its command, the lockfile and manifest bytes, the
runtime's version and the machine. ``<root>/tools/<manager>`` is the package manager's own download
cache (npm's ``_cacache``, uv's, pip's), shared by every install.

* **restored before the build**: the tree is copied into the checkout (``cp -a --reflink=auto``: a
  copy-on-write clone where the file system has them), never linked, so a build cannot change a cached
  file in place;
* **saved after the install**, before any env file is written into the checkout and by a command
  with a scrubbed environment, so no secret can be in a cache;
* **shared by concurrent runs**: a save is copied to ``tmp/`` and renamed into place (the first of two
  identical saves wins, the other is dropped); restores hold a shared ``flock`` on the entry and eviction
  takes an exclusive one without waiting, skipping entries in use;
* **bounded**: after each save, least recently used entries are removed while the cache is over
  ``max_bytes`` (then the largest tool cache, when no install holds it);
* **cheap to leave**: a workspace (with its restored tree) is moved aside with one rename and deleted by
  a process of its own (:func:`tasks.workspace.discard`), so cleaning it does not pay for the tree.

Why not actions/cache-style archives or the package manager's cache alone: with npm's cache warm,
``npm ci`` still unpacks and links every package (1.5-20 s for the samples' trees, measured in
``bench/gitops.py``); restoring the installed tree is one copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from opsflow.core.errors import InvalidInput
from opsflow.core.proc import run

DEFAULT_MAX_BYTES = 10 << 30
TOOL_DIRS = {"npm": "npm", "pnpm": "pnpm-store", "yarn": "yarn", "uv": "uv", "pip": "pip"}


def default_root() -> Path:
    """``$OPSFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/opsflow``, else ``~/.cache/opsflow``."""
    if os.environ.get("OPSFLOW_CACHE_DIR"):
        return Path(os.environ["OPSFLOW_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "opsflow"


def cache_key(*parts: bytes | str) -> str:
    """A sha256 over length-prefixed parts (so ``("ab", "c")`` and ``("a", "bc")`` differ)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(f"{len(data)}:".encode())
        digest.update(data)
    return digest.hexdigest()[:40]


def machine() -> str:
    return f"{platform.system()}-{platform.machine()}"


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def find_secret(path: Path, secrets: list[str]) -> Path | None:
    """The first file under ``path`` holding one of ``secrets`` (bytes compared), or None."""
    needles = [s.encode() for s in secrets if s and len(s) >= 4]
    if not needles:
        return None
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            file = Path(dirpath) / name
            with contextlib.suppress(OSError):
                data = file.read_bytes()
                if any(n in data for n in needles):
                    return file
    return None


def copy_tree(source: Path, dest: Path) -> None:
    """``cp -a --reflink=auto source dest`` (dest must not exist): metadata kept, CoW clone where possible."""
    if dest.exists():
        raise InvalidInput(f"{dest} already exists; a dependency tree is restored only into a fresh checkout")
    dest.parent.mkdir(parents=True, exist_ok=True)
    run(["cp", "-a", "--reflink=auto", str(source), str(dest)], timeout=1800)


@dataclass
class TreeCache:
    """The dependency cache of one build server (see the module docstring)."""

    root: Path
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_env(cls) -> TreeCache:
        """The cache at :func:`default_root`, bounded by ``$OPSFLOW_CACHE_MAX_BYTES`` (default 10 GiB)."""
        limit = os.environ.get("OPSFLOW_CACHE_MAX_BYTES")
        return cls(default_root(), int(limit) if limit else DEFAULT_MAX_BYTES)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        for sub in ("trees", "tools", "tmp", "locks", "trash"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    def tool_dir(self, manager: str) -> Path:
        """The package manager's own download cache (shared by every install)."""
        path = self.root / "tools" / TOOL_DIRS.get(manager, manager)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def entry(self, manager: str, key: str) -> Path:
        return self.root / "trees" / manager / key

    @contextlib.contextmanager
    def _lock(self, name: str, exclusive: bool, wait: bool = True) -> Iterator[bool]:
        path = self.root / "locks" / f"{name}.lock"
        with open(path, "a+") as fh:
            flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
            try:
                fcntl.flock(fh, flags)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def using_tools(self, manager: str) -> Iterator[None]:
        """Held while a package manager uses its tool cache (eviction never clears one in use)."""
        with self._lock(f"tools-{manager}", exclusive=False):
            yield

    def restore(self, manager: str, key: str, dest: Path) -> bool:
        """Copy the cached tree for ``key`` to ``dest``; False when there is none."""
        entry = self.entry(manager, key)
        with self._lock(f"{manager}-{key}", exclusive=False):
            if not (entry / "tree").is_dir():
                return False
            copy_tree(entry / "tree", dest)
            self._touch(entry)
        return True

    def save(self, manager: str, key: str, source: Path) -> bool:
        """Store a copy of ``source`` under ``key`` unless an entry is there; True when this call stored it."""
        entry = self.entry(manager, key)
        if entry.exists() or not source.is_dir():
            return False
        staging = self.root / "tmp" / uuid.uuid4().hex
        try:
            copy_tree(source, staging / "tree")
            (staging / "meta.json").write_text(json.dumps(
                {"manager": manager, "key": key, "size": tree_size(staging / "tree"), "saved": time.time()}))
            entry.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, entry)
            except OSError:  # another run saved the same key first: theirs is as good as ours
                return False
            self._touch(entry)
            return True
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def latest(self, manager: str, prefix: str) -> str | None:
        """The newest complete entry whose key starts with ``prefix`` (build caches: one line of generations)."""
        keys = [(used, key) for used, _size, m, key in self.entries() if m == manager and key.startswith(prefix)]
        return max(keys)[1] if keys else None

    def keep_newest(self, manager: str, prefix: str, keep: str) -> None:
        """Drop the other generations of ``prefix`` (never one in use)."""
        for _used, _size, m, key in self.entries():
            if m == manager and key.startswith(prefix) and key != keep:
                with self._lock(f"{manager}-{key}", exclusive=True, wait=False) as got:
                    if got:
                        self._trash(self.entry(manager, key))
        self.sweep()

    def _touch(self, entry: Path) -> None:
        (entry / "used").touch()

    def entries(self) -> list[tuple[float, int, str, str]]:
        """``(last used, size, manager, key)`` of every complete entry."""
        out = []
        for meta in (self.root / "trees").glob("*/*/meta.json"):
            try:
                data = json.loads(meta.read_text())
                used = (meta.parent / "used").stat().st_mtime
            except (OSError, ValueError):
                continue
            out.append((used, int(data.get("size", 0)), meta.parent.parent.name, meta.parent.name))
        return sorted(out)

    def evict(self, keep: frozenset[tuple[str, str]] = frozenset()) -> list[str]:
        """Remove least recently used entries (never one in use or in ``keep``) while over ``max_bytes``."""
        removed = []
        entries = self.entries()
        tools = {p.name: tree_size(p) for p in (self.root / "tools").iterdir() if p.is_dir()}
        total = sum(e[1] for e in entries) + sum(tools.values())
        for _used, size, manager, key in entries:
            if total <= self.max_bytes:
                break
            if (manager, key) in keep:
                continue
            with self._lock(f"{manager}-{key}", exclusive=True, wait=False) as got:
                if not got:
                    continue
                self._trash(self.entry(manager, key))
            total -= size
            removed.append(f"{manager}/{key}")
        for name, size in sorted(tools.items(), key=lambda kv: -kv[1]):
            if total <= self.max_bytes:
                break
            manager = next((m for m, d in TOOL_DIRS.items() if d == name), name)
            with self._lock(f"tools-{manager}", exclusive=True, wait=False) as got:
                if got:
                    self._trash(self.root / "tools" / name)
                    total -= size
                    removed.append(f"tools/{name}")
        if removed:
            self.sweep()
        return removed

    def _trash(self, path: Path) -> None:
        os.rename(path, self.root / "trash" / uuid.uuid4().hex)

    def sweep(self) -> None:
        """Delete what is in ``trash/`` in a process of its own (the caller does not wait for it)."""
        from opsflow.core.proc import spawn_detached

        if any((self.root / "trash").iterdir()):
            spawn_detached(["find", str(self.root / "trash"), "-mindepth", "1", "-delete"])
