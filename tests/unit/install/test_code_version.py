"""Which commit the code is, and what a worker does with a deployment's pinned commit (no services)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from opsflow.core.paths import PROJECT_ROOT, code_cache_root, prune_code_cache
from opsflow.core.version import checkout_commit, strip_credentials
from opsflow.worker.runner import pinned_commit

SHA = "0123456789abcdef0123456789abcdef01234567"


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def test_the_commit_is_read_from_git_files_on_a_branch_detached_packed_and_in_a_worktree(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "f").write_text("1")
    _git(repo, "add", "f")
    _git(repo, "commit", "-qm", "one")
    first = _git(repo, "rev-parse", "HEAD")
    assert checkout_commit(repo) == first
    (repo / "f").write_text("2")
    _git(repo, "commit", "-qam", "two")
    second = _git(repo, "rev-parse", "HEAD")
    _git(repo, "pack-refs", "--all")  # the branch now lives only in packed-refs
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert checkout_commit(repo) == second
    _git(repo, "checkout", "-q", "--detach", first)
    assert checkout_commit(repo) == first
    _git(repo, "worktree", "add", "-q", "-b", "side", str(tmp_path / "wt"), second)
    assert checkout_commit(tmp_path / "wt") == second
    assert checkout_commit(tmp_path) is None  # not a checkout


def test_this_checkout_knows_its_commit():
    assert checkout_commit(PROJECT_ROOT) == _git(PROJECT_ROOT, "rev-parse", "HEAD")


def test_credentials_are_stripped_from_clone_urls():
    assert strip_credentials("https://user:tok@git.lan:8443/a/b.git") == "https://git.lan:8443/a/b.git"
    assert strip_credentials("https://git.lan/a/b.git") == "https://git.lan/a/b.git"
    assert strip_credentials("https://ghp_token@github.com/a/b.git") == "https://github.com/a/b.git"
    assert strip_credentials("ssh://git@git.lan:2222/a/b.git") == "ssh://git@git.lan:2222/a/b.git"
    assert strip_credentials("ssh://git:pw@git.lan/a/b.git") == "ssh://git@git.lan/a/b.git"
    assert strip_credentials("git@git.lan:a/b.git") == "git@git.lan:a/b.git"
    assert strip_credentials("/srv/git/opsflow") == "/srv/git/opsflow"


@pytest.mark.parametrize(("steps", "expected"), [
    ([{"prefect.deployments.steps.git_clone": {"repository": "/r", "commit_sha": SHA, "id": "c"}}], ("/r", SHA)),
    ([{"prefect.deployments.steps.pull.git_clone": {"repository": "https://g/o.git", "commit_sha": SHA}}],
     ("https://g/o.git", SHA)),
    ([{"prefect.deployments.steps.git_clone": {"repository": "/r", "branch": "main"}}], None),  # not one commit
    ([{"prefect.deployments.steps.git_clone": {"repository": "/r", "commit_sha": SHA[:12]}}], None),
    ([{"prefect.deployments.steps.git_clone": {"repository": "{{ $X }}", "commit_sha": SHA}}], None),
    ([{"prefect.deployments.steps.git_clone": {"repository": "/r", "commit_sha": SHA}},
      {"prefect.deployments.steps.run_shell_script": {"script": "make"}}], None),  # more to do than a clone
    ([{"prefect.deployments.steps.set_working_directory": {"directory": "/x"}}], None),
    (None, None), ([], None),
])
def test_a_deployment_is_pinned_only_by_one_git_clone_of_a_full_commit(steps, expected):
    assert pinned_commit(steps) == expected


def test_prefect_yaml_pins_every_deployment_to_the_applied_commit():
    spec = yaml.safe_load((PROJECT_ROOT / "deployments" / "prefect.yaml").read_text())
    assert spec["pull"] == [{"prefect.deployments.steps.git_clone": {
        "id": "clone-opsflow", "repository": "{{ $OPSFLOW_REPOSITORY }}", "commit_sha": "{{ $OPSFLOW_COMMIT }}"}}]
    assert not spec.get("build")  # nothing runs on the applying machine but Prefect's own deploy
    for deployment in spec["deployments"]:
        assert deployment["version"] == "{{ $OPSFLOW_VERSION }}", deployment["entrypoint"]
        assert "pull" not in deployment and "opsflow" in deployment["tags"]


def test_code_cache_location_and_pruning(tmp_path, monkeypatch):
    monkeypatch.setenv("OPSFLOW_CODE_CACHE", str(tmp_path / "cache"))
    assert code_cache_root() == tmp_path / "cache"
    monkeypatch.delenv("OPSFLOW_CODE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert code_cache_root() == tmp_path / "xdg" / "opsflow" / "code"
    root = tmp_path / "cache"
    now = time.time()
    clones = []
    for i in range(5):
        clone = root / f"{i:040x}"
        clone.mkdir(parents=True)
        age = 3 * 86400 if i < 3 else 60  # three unused for days, two used a minute ago
        os.utime(clone, (now - age - i, now - age - i))
        clones.append(clone)
    (root / ".clone-in-progress").mkdir()
    removed = prune_code_cache(root, keep=clones[0], newest=1)
    # the one in use and the recently used ones stay, whatever the count; in-progress clones are not touched
    assert sorted(removed) == [clones[1], clones[2]]
    assert clones[0].is_dir() and clones[3].is_dir() and clones[4].is_dir() and (root / ".clone-in-progress").is_dir()


def _repo_with_origin(path: Path, origin: str) -> str:
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    (path / "f").write_text("1")
    _git(path, "add", "f")
    _git(path, "commit", "-qm", "one")
    _git(path, "remote", "add", "origin", origin)
    return _git(path, "rev-parse", "HEAD")


def test_apply_pins_the_checkout_head_and_its_origin_without_credentials(tmp_path, monkeypatch):
    from opsflow.core.errors import InvalidInput
    from opsflow.deploy import code_source

    monkeypatch.delenv("OPSFLOW_REPOSITORY", raising=False)
    repo = tmp_path / "co"
    head = _repo_with_origin(repo, "https://deploy:s3cret@git.lan/platform/opsflow.git")
    source = code_source(root=repo)
    assert (source.repository, source.commit, source.version, source.dirty) == (
        "https://git.lan/platform/opsflow.git", head, head[:12], False)
    assert source.env() == {"OPSFLOW_REPOSITORY": "https://git.lan/platform/opsflow.git", "OPSFLOW_COMMIT": head,
                            "OPSFLOW_VERSION": head[:12]}
    (repo / "f").write_text("edited")
    assert code_source(root=repo).dirty
    monkeypatch.setenv("OPSFLOW_REPOSITORY", "ssh://git@git.lan/platform/opsflow.git")
    assert code_source(root=repo).repository == "ssh://git@git.lan/platform/opsflow.git"
    with pytest.raises(InvalidInput, match="--repository must not carry credentials"):
        code_source(repository="https://u:tok@git.lan/o.git", root=repo)
    with pytest.raises(InvalidInput, match="cannot tell which opsflow commit"):
        code_source(commit="abc123", root=repo)
    with pytest.raises(InvalidInput, match="no git checkout"):
        code_source(root=tmp_path / "nothing-here")


def test_the_build_hook_records_commit_origin_and_dirtiness_and_falls_back_to_the_sdist_record(tmp_path):
    import json

    from hatch_build import RECORD_IN_SDIST, source_record

    repo = tmp_path / "co"
    head = _repo_with_origin(repo, "https://ci:tok@git.lan/platform/opsflow.git")
    assert source_record(repo) == {"commit": head, "repository": "https://git.lan/platform/opsflow.git",
                                   "dirty": False}
    unpacked = tmp_path / "sdist"
    unpacked.mkdir()
    (unpacked / RECORD_IN_SDIST).write_text(json.dumps({"commit": head, "repository": "r", "dirty": True}))
    assert source_record(unpacked)["commit"] == head
