"""Real git repositories for tests: a working copy pushed to a bare repository on disk."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

GIT_ENV = {"GIT_AUTHOR_NAME": "opsflow tests", "GIT_AUTHOR_EMAIL": "tests@opsflow.invalid",
           "GIT_COMMITTER_NAME": "opsflow tests", "GIT_COMMITTER_EMAIL": "tests@opsflow.invalid"}


def git(*args: str, cwd: Path) -> str:
    import os

    out = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True,
                         check=True, timeout=120)
    return out.stdout.strip()


class SourceRepo:
    """A working copy with a bare ``origin``; ``commit()`` pushes and returns the SHA."""

    def __init__(self, root: Path, source: Path | None = None, branch: str = "main"):
        self.work = root / "work"
        self.bare = root / "origin.git"
        if source is not None:
            shutil.copytree(source, self.work, ignore=shutil.ignore_patterns("node_modules", "dist", "reports"))
        else:
            self.work.mkdir(parents=True)
        git("init", "--bare", "-q", "-b", branch, str(self.bare), cwd=root)
        git("init", "-q", "-b", branch, cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)
        self.branch = branch

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def write(self, rel: str, text: str) -> None:
        path = self.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def commit(self, message: str = "change", branch: str | None = None) -> str:
        branch = branch or self.branch
        git("checkout", "-q", "-B", branch, cwd=self.work)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)
