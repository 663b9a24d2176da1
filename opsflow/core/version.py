"""Which opsflow code this is: the package version and the git commit it comes from.

``opsflow apply`` versions every deployment with that commit and makes the workers pull exactly it
(``deployments/prefect.yaml``'s ``git_clone`` step); a worker compares a deployment's commit with
its own to run its preloaded code (same commit) or a clone of that commit. In a checkout the commit
is read from ``.git`` (HEAD, the ref file or ``packed-refs``): no subprocess, since a worker asks
once per run. A wheel records it at build time in ``opsflow/_build.json`` (``hatch_build.py``).
"""

from __future__ import annotations

import json
import re
from contextlib import suppress
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from opsflow.core.paths import BUILD_INFO_FILE, INSTALLED, PROJECT_ROOT

FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


def git_dir(root: Path) -> Path | None:
    """The git directory of the checkout at ``root`` (``.git``, or where a worktree's ``.git`` file points)."""
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    try:
        text = dot_git.read_text().strip()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    target = Path(text.removeprefix("gitdir:").strip())
    return target if target.is_absolute() else (root / target).resolve()


def _ref_value(gitdir: Path, ref: str) -> str | None:
    common = gitdir
    with suppress(OSError):
        common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
    for base in dict.fromkeys((gitdir, common)):
        with suppress(OSError):
            value = (base / ref).read_text().strip()
            if FULL_SHA.match(value):
                return value
        with suppress(OSError):
            for line in (base / "packed-refs").read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name.strip() == ref and FULL_SHA.match(sha):
                    return sha
    return None


def checkout_commit(root: Path) -> str | None:
    """The commit checked out at ``root`` (its HEAD), or ``None`` when ``root`` is not a git checkout."""
    gitdir = git_dir(root)
    if gitdir is None:
        return None
    try:
        head = (gitdir / "HEAD").read_text().strip()
    except OSError:
        return None
    if FULL_SHA.match(head):
        return head
    if head.startswith("ref:"):
        return _ref_value(gitdir, head.removeprefix("ref:").strip())
    return None


@cache
def build_info() -> dict:
    """What the wheel's build recorded (``commit``, ``repository``, ``dirty``); empty in a checkout."""
    try:
        return json.loads(BUILD_INFO_FILE.read_text())
    except (OSError, ValueError):
        return {}


def own_commit(root: Path = PROJECT_ROOT) -> str | None:
    """The commit this code is: the wheel's recorded commit, else the checkout's HEAD; ``None`` if unknown."""
    if INSTALLED and root == PROJECT_ROOT:
        commit = build_info().get("commit")
        return commit if isinstance(commit, str) and FULL_SHA.match(commit) else None
    return checkout_commit(root)


def package_version() -> str:
    """The installed distribution's version (``0+unknown`` when opsflow runs without being installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("opsflow")
    except PackageNotFoundError:
        return "0+unknown"


def version_line() -> str:
    """What ``opsflow --version`` prints: version, commit, and where the code is."""
    commit = own_commit()
    where = "installed package" if INSTALLED else f"checkout {PROJECT_ROOT}"
    dirty = " (built with uncommitted changes)" if INSTALLED and build_info().get("dirty") else ""
    return f"opsflow {package_version()} (commit {commit or 'unknown'}{dirty}, {where})"


def strip_credentials(url: str) -> str:
    """``url`` without its credentials (a clone URL recorded in a wheel or a deployment never carries one).

    Over HTTP(S) a user name alone may be a token (``https://<token>@host``), so all of it goes;
    an SSH user (``ssh://git@host``) is not a secret and stays, its password does not.
    """
    if "://" not in url:
        return url
    parts = urlsplit(url)
    web = parts.scheme in ("http", "https")
    if parts.password is None and (parts.username is None or not web):
        return url
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    user = "" if web else f"{parts.username}@"
    return urlunsplit(parts._replace(netloc=user + host))
