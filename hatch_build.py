"""Wheel build hook (hatchling): the commit a wheel is built from, and the path file that makes its tree importable.

- ``opsflow/_build.json``: the commit, the ``origin`` clone URL (without credentials) and whether the
  tree had uncommitted changes. ``opsflow apply`` run from the installed wheel applies that commit,
  and a worker installed from it knows which deployments run its own code (``opsflow.core.version``).
  An sdist carries the same record as ``opsflow-build.json``, so a wheel built from it (no ``.git``)
  still knows its commit.
- ``opsflow-project.pth``: puts ``site-packages/opsflow/_project`` (where the wheel carries
  ``flows/``, ``tasks/``, ``blocks/``, ``deployments/``, ``samples/``) on ``sys.path``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # imported outside a build, by the tests of source_record()
    BuildHookInterface = object

RECORD_IN_SDIST = "opsflow-build.json"


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _without_credentials(url: str) -> str:
    """``opsflow.core.version.strip_credentials`` from the tree being built (it imports only the stdlib)."""
    root = str(Path(__file__).resolve().parent)
    sys.path.insert(0, root)
    try:
        from opsflow.core.version import strip_credentials
    finally:
        sys.path.remove(root)
    return strip_credentials(url)
def source_record(root: Path) -> dict:
    """Commit, repository and dirtiness of the checkout at ``root`` (the sdist's record when there is no git)."""
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        recorded = root / RECORD_IN_SDIST
        return json.loads(recorded.read_text()) if recorded.is_file() else {}
    repository = _without_credentials(_git(root, "config", "--get", "remote.origin.url")) or str(root)
    dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit, "repository": repository, "dirty": dirty}


class CustomBuildHook(BuildHookInterface):
    """Adds the generated files to the wheel (and the record to the sdist); editable installs need neither."""

    def initialize(self, version: str, build_data: dict) -> None:
        if version == "editable":
            return
        out = Path(tempfile.mkdtemp(prefix="opsflow-build-"))
        record = out / "_build.json"
        record.write_text(json.dumps(source_record(Path(self.root)), indent=2) + "\n")
        if self.target_name == "sdist":
            build_data["force_include"][str(record)] = RECORD_IN_SDIST
            return
        pth = out / "opsflow-project.pth"
        pth.write_text("opsflow/_project\n")
        build_data["force_include"][str(record)] = "opsflow/_build.json"
        build_data["force_include"][str(pth)] = "opsflow-project.pth"
