"""clone_repo against real repositories: file:// and smart HTTP (git http-backend) with a token."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import SecretStr

from opsflow.core.errors import InvalidInput, RemoteError
from tasks.git import clone_repo
from tests.support.gitrepos import SourceRepo

TOKEN = "ghs_testtoken_0123456789abcdef"


@pytest.fixture
def repo(tmp_path):
    src = SourceRepo(tmp_path / "src")
    src.write("app/hello.txt", "v1\n")
    first = src.commit("first")
    src.write("app/hello.txt", "v2\n")
    second = src.commit("second")
    return src, first, second


def test_clone_checks_out_exactly_the_requested_commit(repo, tmp_path):
    src, first, second = repo
    checkout = clone_repo.fn(src.url, first, workdir=tmp_path / "co")
    assert (checkout.path / "app/hello.txt").read_text() == "v1\n"
    assert checkout.sha == first
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout.path, capture_output=True, text=True).stdout
    assert head.strip() == first
    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=checkout.path,
                             capture_output=True, text=True).stdout.strip()
    assert shallow == "true"
    assert checkout.tree_id("app") != clone_repo.fn(src.url, second, workdir=tmp_path / "co2").tree_id("app")


@pytest.mark.parametrize("sha", ["main", "main; rm -rf /", "a" * 39, "--upload-pack=touch /tmp/x"])
def test_bad_refs_are_rejected_before_git_runs(sha, tmp_path):
    with pytest.raises(InvalidInput):
        clone_repo.fn("file:///nonexistent", sha, workdir=tmp_path / "co")
    assert not (tmp_path / "co").exists()


def test_credentials_in_the_url_are_refused(tmp_path):
    with pytest.raises(InvalidInput, match="must not carry credentials"):
        clone_repo.fn("https://user:tok@git.example/r.git", "a" * 40, workdir=tmp_path / "co")


def test_unknown_commit_fails_naming_it(repo, tmp_path):
    src, _, _ = repo
    with pytest.raises(RemoteError, match="could not fetch deadbeefdead"):
        clone_repo.fn(src.url, "deadbeef" * 5, workdir=tmp_path / "co")


class _GitHttp(BaseHTTPRequestHandler):
    """Smart HTTP via `git http-backend`, requiring Basic auth with the token; records what it saw."""

    seen: ClassVar[list[dict]] = []
    root: Path

    def log_message(self, *args):  # keep test output quiet
        pass

    def _serve(self):
        header = self.headers.get("Authorization", "")
        type(self).seen.append({"path": self.path, "auth": header})
        expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
        if header != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {"GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
               "QUERY_STRING": query, "REQUEST_METHOD": self.command,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""), "PATH": os.environ["PATH"]}
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(": ")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _serve


@pytest.fixture
def http_git(repo, tmp_path):
    src, first, _second = repo
    _GitHttp.root = src.bare.parent
    _GitHttp.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GitHttp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{src.bare.name}", first
    server.shutdown()


@pytest.mark.skipif(not shutil.which("git"), reason="git not installed")
def test_token_travels_only_in_the_http_header(http_git, tmp_path, monkeypatch):
    url, sha = http_git
    argv_seen: list[list[str]] = []
    real_popen = subprocess.Popen.__init__

    def spy(self, args, *a, **kw):
        argv_seen.append(list(map(str, args)) if isinstance(args, (list, tuple)) else [str(args)])
        real_popen(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    checkout = clone_repo.fn(url, sha, token=SecretStr(TOKEN), workdir=tmp_path / "co")
    monkeypatch.undo()
    assert (checkout.path / "app/hello.txt").read_text() == "v1\n"
    assert any(s["auth"].startswith("Basic ") for s in _GitHttp.seen)
    assert all(TOKEN not in s["path"] for s in _GitHttp.seen)
    assert argv_seen and all(TOKEN not in " ".join(a) for a in argv_seen)
    config = (checkout.path / ".git" / "config").read_text()
    assert TOKEN not in config and "extraHeader" not in config


def test_a_wrong_token_fails_without_showing_it(http_git, tmp_path):
    url, sha = http_git
    with pytest.raises(RemoteError) as info:
        clone_repo.fn(url, sha, token=SecretStr("wrong-token-value-123"), workdir=tmp_path / "co")
    assert "wrong-token-value-123" not in str(info.value)


def test_failed_clone_attempts_leave_no_directory(tmp_path, monkeypatch):
    """Regression: every failed clone attempt left its directory (45 from 15 failed runs)."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for _ in range(3):
        with pytest.raises(RemoteError):
            clone_repo.fn(f"file://{tmp_path}/no-such-repo.git", "b" * 40)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_a_workspace_holds_the_checkout_and_a_home_and_a_trees_only_fetch_has_no_files(repo, tmp_path, monkeypatch):
    import tempfile

    src, first, _second = repo
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    checkout = clone_repo.fn(src.url, first)
    assert checkout.path == checkout.root / "src" and checkout.home == checkout.root / "home"
    assert (checkout.path / "app/hello.txt").is_file()
    trees = clone_repo.fn(src.url, first, files=False)
    assert not (trees.path / "app").exists() and trees.tree_id("app") == checkout.tree_id("app")


def test_workspaces_of_dead_runs_are_swept_and_env_files_go_first(tmp_path):
    import os
    import subprocess

    from tasks.workspace import OWNER, discard, new_workspace, sweep_orphans

    mine = new_workspace(tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / "opsflow-run-dead"
    (dead / "src" / "backend").mkdir(parents=True)
    (dead / OWNER).write_text(f"{gone.pid} 1\n")
    (dead / "src" / "backend" / ".env").write_text("TOKEN=x\n")
    reused = tmp_path / "opsflow-run-reused"  # our pid, but not our start time: a pid reused since
    reused.mkdir()
    (reused / OWNER).write_text(f"{os.getpid()} 1\n")
    foreign = tmp_path / "opsflow-run-foreign"  # no owner record: another program's (or an older opsflow's)
    (foreign / "src").mkdir(parents=True)
    assert sorted(sweep_orphans(tmp_path)) == sorted([str(dead), str(reused)])
    assert foreign.exists()
    assert not dead.exists() and not reused.exists() and mine.exists()  # the live run's workspace stays
    discard(mine)
    assert not mine.exists()
