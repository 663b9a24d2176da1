"""Packaging modes (what an artifact holds) and the build server's dependency cache, on real directories."""

from __future__ import annotations

import tarfile
import threading

import pytest

from blocks.application import Component
from opsflow.core.errors import BuildFailed, InvalidInput
from tasks.artifacts.store import pack
from tasks.build.caches import TreeCache
from tasks.build.packaging import artifact_layout


def _names(archive) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


def _tree(root, files: dict[str, str]):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_runtime_dependencies_npm_puts_package_json_and_production_modules_beside_the_output(tmp_path):
    comp_dir = _tree(tmp_path / "api", {"package.json": '{"name":"api"}', "Dockerfile": "FROM node:20-alpine\n",
                                        "dist/server.js": "require('ms')", "node_modules/typescript/x.js": "dev"})
    runtime = _tree(tmp_path / "runtime", {"node_modules/ms/index.js": "module.exports=1"}) / "node_modules"
    comp = Component(name="api", runtime_dependencies="npm")
    layout = artifact_layout(comp, comp_dir, comp_dir / "dist", runtime)
    pack(layout, comp_dir / "Dockerfile", tmp_path / "a.tar.gz")
    names = _names(tmp_path / "a.tar.gz")
    assert {"Dockerfile", ".dockerignore", "server.js", "package.json", "node_modules/ms/index.js"} <= set(names)
    assert not [n for n in names if "typescript" in n]  # dev dependencies stay out of the image
    assert names[:2] == [".dockerignore", "Dockerfile"] and names[2:] == sorted(names[2:])


def test_runtime_dependencies_refuse_an_output_that_already_has_node_modules(tmp_path):
    comp_dir = _tree(tmp_path / "api", {"package.json": "{}", "dist/node_modules/x.js": ""})
    with pytest.raises(BuildFailed, match="already has node_modules"):
        artifact_layout(Component(name="api", runtime_dependencies="npm"), comp_dir, comp_dir / "dist",
                        tmp_path / "nowhere")


def test_nextjs_standalone_gets_public_and_static_where_server_js_serves_them(tmp_path):
    web = _tree(tmp_path / "web", {
        ".next/standalone/server.js": "", ".next/standalone/.next/server/app.js": "",
        ".next/standalone/node_modules/next/index.js": "", ".next/static/chunks/a.js": "chunk",
        "public/logo.svg": "<svg/>", "Dockerfile": "FROM node:20-alpine\n"})
    comp = Component(name="web", packaging="nextjs-standalone")
    pack(artifact_layout(comp, web, web / ".next" / "standalone"), web / "Dockerfile", tmp_path / "w.tar.gz")
    names = set(_names(tmp_path / "w.tar.gz"))
    assert {"server.js", ".next/server/app.js", ".next/static/chunks/a.js", "public/logo.svg",
            "node_modules/next/index.js"} <= names


def test_nextjs_standalone_of_a_monorepo_app_is_assembled_under_its_path(tmp_path):
    web = _tree(tmp_path / "web", {
        ".next/standalone/apps/web/server.js": "", ".next/standalone/apps/web/.next/BUILD_ID": "1",
        ".next/standalone/node_modules/next/index.js": "", ".next/static/x.css": "", "public/a.txt": "a"})
    layout = artifact_layout(Component(name="web", packaging="nextjs-standalone"), web, web / ".next" / "standalone")
    assert (web / ".next" / "static", "apps/web/.next/static") in layout
    assert (web / "public", "apps/web/public") in layout


def test_nextjs_without_standalone_output_says_what_to_set(tmp_path):
    web = _tree(tmp_path / "web", {".next/standalone/package.json": "{}"})
    with pytest.raises(BuildFailed, match="output: 'standalone'"):
        artifact_layout(Component(name="web", packaging="nextjs-standalone"), web, web / ".next" / "standalone")


def test_a_layout_may_not_put_two_files_at_one_path(tmp_path):
    a = _tree(tmp_path / "a", {"x.js": "1"})
    b = _tree(tmp_path / "b", {"x.js": "2"})
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(InvalidInput, match=r"'x\.js' twice"):
        pack([(a, ""), (b, "")], tmp_path / "Dockerfile", tmp_path / "t.tar.gz")


def test_packing_is_reproducible(tmp_path):
    out = _tree(tmp_path / "dist", {"a.js": "1", "sub/b.js": "2"})
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    first = pack(out, tmp_path / "Dockerfile", tmp_path / "1.tar.gz")
    (out / "a.js").touch()  # a new mtime changes nothing
    assert pack(out, tmp_path / "Dockerfile", tmp_path / "2.tar.gz") == first


# --- the dependency cache --------------------------------------------------------------------------

def test_a_saved_tree_is_restored_as_a_copy_the_build_cannot_change(tmp_path):
    cache = TreeCache(tmp_path / "cache")
    src = _tree(tmp_path / "one" / "node_modules", {"ms/index.js": "v1"})
    assert cache.save("npm", "k1", src) is True
    assert cache.save("npm", "k1", src) is False  # already there: the first save wins
    dest = tmp_path / "two" / "node_modules"
    assert cache.restore("npm", "k1", dest) is True
    (dest / "ms" / "index.js").write_text("changed by a build")
    assert (cache.entry("npm", "k1") / "tree" / "ms" / "index.js").read_text() == "v1"
    assert cache.restore("npm", "other", tmp_path / "three") is False


def test_concurrent_saves_of_one_key_leave_one_complete_entry(tmp_path):
    cache = TreeCache(tmp_path / "cache")
    src = _tree(tmp_path / "src", {f"p{i}/index.js": "x" * 1000 for i in range(50)})
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.save("npm", "same", src))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert len(list((cache.entry("npm", "same") / "tree").iterdir())) == 50
    assert list((cache.root / "tmp").iterdir()) == []


def test_eviction_keeps_the_cache_under_its_budget_least_recently_used_first(tmp_path):
    import os
    import time

    cache = TreeCache(tmp_path / "cache", max_bytes=2500)
    for i, key in enumerate(("old", "mid", "new")):
        cache.save("npm", key, _tree(tmp_path / key, {"blob": "x" * 1000}))
        os.utime(cache.entry("npm", key) / "used", (time.time() - 100 + i, time.time() - 100 + i))
    cache.restore("npm", "old", tmp_path / "restored")  # using "old" makes it the most recent
    removed = cache.evict(keep=frozenset())
    assert removed == ["npm/mid"]
    assert {e[3] for e in cache.entries()} == {"old", "new"}


def test_an_entry_in_use_is_not_evicted(tmp_path):
    cache = TreeCache(tmp_path / "cache", max_bytes=0)
    cache.save("npm", "busy", _tree(tmp_path / "b", {"blob": "x" * 100}))
    with cache._lock("npm-busy", exclusive=False):
        assert cache.evict() == []
    assert cache.evict() == ["npm/busy"]


def test_keys_change_with_the_lockfile_and_the_manifest(tmp_path):
    from tasks.build.deps import tree_key

    d = _tree(tmp_path, {"package-lock.json": '{"v":1}', "package.json": '{"name":"a"}'})
    key = tree_key("npm", (("npm", "ci"),), d, d / "package-lock.json", ("package.json",), ("node", "--version"))
    (d / "package.json").write_text('{"name":"a","scripts":{"postinstall":"x"}}')
    assert tree_key("npm", (("npm", "ci"),), d, d / "package-lock.json", ("package.json",),
                    ("node", "--version")) != key


def test_a_build_cache_follows_the_components_last_build_and_never_keeps_a_secret(tmp_path):
    import logging

    from tasks.build.app import restore_build_caches, save_build_caches
    from tasks.git import Checkout

    cache = TreeCache(tmp_path / "cache")
    web = Component(name="web", packaging="nextjs-standalone")
    assert web.build_cache_dirs == [".next/cache"]
    log = logging.getLogger("test")
    first = Checkout(path=_tree(tmp_path / "one", {".next/cache/webpack/a.pack": "compiled"}), sha="a" * 40,
                     repository="file:///r")
    save_build_caches(first, web, first.path, cache, ["tok-12345678"], log)
    second = Checkout(path=tmp_path / "two", sha="b" * 40, repository="file:///r")
    second.path.mkdir()
    restore_build_caches(second, web, second.path, cache, log)
    assert (second.path / ".next/cache/webpack/a.pack").read_text() == "compiled"
    (second.path / ".next/cache/fetch-cache").write_text("response with tok-12345678 in it")
    save_build_caches(second, web, second.path, cache, ["tok-12345678"], log)  # refused: holds a secret
    third = Checkout(path=tmp_path / "three", sha="c" * 40, repository="file:///r")
    third.path.mkdir()
    restore_build_caches(third, web, third.path, cache, log)
    assert not (third.path / ".next/cache/fetch-cache").exists()  # the last clean build's cache came back
    assert (third.path / ".next/cache/webpack/a.pack").exists()
    assert len([e for e in cache.entries() if e[2] == "build"]) == 1


def test_a_uv_project_installs_once_and_its_venv_restores_into_another_checkout(tmp_path):
    """Real uv, no network: a project without dependencies still gets its (relocatable) .venv."""
    import shutil
    import subprocess

    from tasks.build.deps import install_deps
    from tasks.git import Checkout

    if not shutil.which("uv"):
        pytest.skip("uv is not on PATH")
    project = {"pyproject.toml": '[project]\nname = "tiny"\nversion = "0.1.0"\nrequires-python = ">=3.9"\n'
                                 "dependencies = []\n"}
    comp = Component(name="svc", install="uv")
    cache = TreeCache(tmp_path / "cache")
    checkouts = []
    for name in ("one", "two"):
        path = _tree(tmp_path / name / "src", project)
        subprocess.run(["uv", "lock", "-q"], cwd=path, check=True, timeout=60)
        checkouts.append(Checkout(path=path, sha="d" * 40, repository="file:///r"))
    first = install_deps.fn(checkouts[0], comp, cache)
    second = install_deps.fn(checkouts[1], comp, cache)
    assert (first.restored, second.restored) == (False, True) and first.key == second.key
    venv_python = checkouts[1].path / ".venv" / "bin" / "python"
    out = subprocess.run([str(venv_python), "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip()
    assert out == str(checkouts[1].path / ".venv")  # the restored venv is this checkout's, not the first one's
