"""The cache of ML environments (tasks/mlops/envcache.py) on a real filesystem with real locks: one build per key
however many runs ask at once, nothing half-built ever used, nothing in use ever evicted."""

from __future__ import annotations

import os
import threading
import time

import pytest

from opsflow.core.errors import LockTimeout
from tasks.mlops.envcache import MARKER, DirCache, plan_eviction


def _builder(calls: list[str], delay: float = 0.0, size: int = 10):
    def build(path):
        calls.append(path.name)
        time.sleep(delay)  # a build that takes a while, so the other threads really wait on it
        (path / "payload").write_bytes(b"x" * size)
        return {"built_by": threading.current_thread().name}

    return build


def test_concurrent_runs_of_one_key_build_it_once_and_all_use_it(tmp_path):
    cache, calls, seen = DirCache(tmp_path), [], []

    def use() -> None:
        with cache.entry("k1", _builder(calls, delay=0.3)) as entry:
            seen.append(((entry.path / "payload").read_bytes(), entry.info["built_by"], entry.built))

    threads = [threading.Thread(target=use, name=f"run-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert calls == ["k1"]
    assert len(seen) == 4 and {s[0] for s in seen} == {b"x" * 10} and len({s[1] for s in seen}) == 1
    assert sorted(s[2] for s in seen) == [False, False, False, True]
    assert cache.entries()[0][0] == "k1" and cache.entries()[0][2] == 10


def test_a_failed_build_leaves_nothing_and_the_next_run_builds_again(tmp_path):
    cache, calls = DirCache(tmp_path), []

    def broken(path):
        (path / "half").write_text("partial")
        raise RuntimeError("uv failed")

    with pytest.raises(RuntimeError, match="uv failed"), cache.entry("k", broken):
        pass
    assert not (tmp_path / "k").exists() and cache.entries() == []
    with cache.entry("k", _builder(calls)) as entry:
        assert not (entry.path / "half").exists() and entry.built
    # what a build killed half-way left (a directory without the marker) is rebuilt, not used
    (tmp_path / "k" / MARKER).unlink()
    with cache.entry("k", _builder(calls)) as entry:
        assert entry.built and calls == ["k", "k"]


def _last_used(cache: DirCache, key: str, when: float) -> None:
    os.utime(cache.root / key / MARKER, (when, when))


def test_least_recently_used_entries_go_but_never_one_in_use(tmp_path):
    cache = DirCache(tmp_path, max_entries=2)
    for key in ("old", "mid"):
        with cache.entry(key, _builder([])):
            pass
    _last_used(cache, "old", 1000)
    _last_used(cache, "mid", 2000)
    held = threading.Event()
    release = threading.Event()

    def hold_old() -> None:
        with cache.entry("old", _builder([])):
            held.set()
            release.wait(timeout=30)

    holder = threading.Thread(target=hold_old)
    holder.start()
    assert held.wait(timeout=30)
    with cache.entry("new", _builder([])):
        pass  # over the bound: "mid" is the least recently used entry nobody holds
    assert sorted(k for k, _, _ in cache.entries()) == ["new", "old"]
    release.set()
    holder.join(timeout=30)
    _last_used(cache, "old", 1000)
    with cache.entry("newest", _builder([])):
        pass
    assert sorted(k for k, _, _ in cache.entries()) == ["new", "newest"]
    assert not any(p.name.startswith(".trash-") for p in tmp_path.iterdir())


def test_bytes_bound_and_plan_order():
    entries = [("a", 1.0, 50), ("b", 2.0, 50), ("c", 3.0, 50)]
    assert plan_eviction(entries, keep="c", max_entries=10, max_bytes=100) == ["a"]
    assert plan_eviction(entries, keep="a", max_entries=1, max_bytes=10**9) == ["b", "c"]
    assert plan_eviction(entries, keep="", max_entries=3, max_bytes=150) == []


def test_a_build_held_too_long_times_out_saying_so(tmp_path):
    cache = DirCache(tmp_path, wait_s=0.5)
    started, finish = threading.Event(), threading.Event()

    def slow(path):
        started.set()
        finish.wait(timeout=30)
        return {}

    def build() -> None:
        with cache.entry("k", slow):
            pass

    builder = threading.Thread(target=build)
    builder.start()
    assert started.wait(timeout=30)
    try:
        with pytest.raises(LockTimeout, match="stayed locked"), cache.entry("k", slow):
            pass
    finally:
        finish.set()
        builder.join(timeout=30)
    with cache.entry("k", slow) as entry:  # once the build is done, it is there to use
        assert not entry.built
