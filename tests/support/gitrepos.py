"""Real git repositories for tests: a working copy pushed to a bare repository on disk."""

from __future__ import annotations

from opsflow.samples import GIT_ENV, SampleRepo, git

SourceRepo = SampleRepo

__all__ = ["GIT_ENV", "SourceRepo", "git"]
