"""Cloning exactly one commit of a repository, with the token kept out of argv and URLs."""

from __future__ import annotations

import base64
import shutil
from dataclasses import dataclass, replace
from datetime import UTC
from pathlib import Path

from prefect import get_run_logger, task
from pydantic import SecretStr

from blocks.fields import check_relative_path, check_sha
from opsflow.core.errors import InvalidInput, RemoteError
from opsflow.core.redact import redact
from tasks.workspace import new_workspace, sweep_orphans


@dataclass(frozen=True)
class Checkout:
    """A working tree at one commit."""

    path: Path
    sha: str
    repository: str
    committed_at: str = ""  # committer time, ISO 8601 UTC: a reproducible "created" time for images
    workspace: Path | None = None  # the run's workspace holding ``path`` (removed with it); None: ``path`` alone
    files: bool = True  # False: the commit's trees are known but no file is checked out (a merge's fetch)

    @property
    def root(self) -> Path:
        """What to remove when the run is done: the workspace, or the checkout itself."""
        return self.workspace or self.path

    @property
    def home(self) -> Path:
        """The ``HOME`` (and ``TMPDIR``) of the builds and tests run in this checkout."""
        home = (self.workspace / "home") if self.workspace else (self.path.parent / f"{self.path.name}.home")
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        return home

    def tree_id(self, subpath: str = ".") -> str:
        """The git tree id of ``subpath`` at this commit: a content address of that directory."""
        subpath = check_relative_path(subpath)
        from git import GitCommandError, Repo

        spec = f"{self.sha}^{{tree}}" if subpath in (".", "./", "") else f"{self.sha}:{subpath.rstrip('/')}"
        try:
            return Repo(self.path).git.rev_parse(spec)
        except GitCommandError as exc:
            raise InvalidInput(f"{subpath!r} does not exist in {self.repository} at {self.sha[:12]}") from exc

    def commit_time(self) -> str:
        """The commit's committer time, ISO 8601 UTC (used as the image's created time)."""
        from datetime import datetime

        from git import Repo

        ts = Repo(self.path).commit(self.sha).committed_date
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def auth_env(token: SecretStr | None, user: str = "x-access-token") -> dict[str, str]:
    """Git config in the environment that sends the token as an HTTP header (never in argv or URLs)."""
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false"}
    if token is not None:
        basic = base64.b64encode(f"{user}:{token.get_secret_value()}".encode()).decode()
        env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                    "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"})
    return env


@task(name="clone-repo", task_run_name="clone-{sha:.12}", retries=2, retry_delay_seconds=[3, 10],
      retry_condition_fn=lambda task, run, state: isinstance(state.result(raise_on_failure=False), RemoteError))
def clone_repo(
    repository: str,
    sha: str,
    token: SecretStr | None = None,
    token_user: str = "x-access-token",  # noqa: S107 - the user name GitHub expects, not a secret
    workdir: Path | None = None,
    timeout: float = 600,
    files: bool = True,
) -> Checkout:
    """Fetch exactly ``sha`` (depth 1) from ``repository`` into a fresh workspace and check it out.

    With ``files=False`` only the commit and its trees are fetched (``--filter=blob:none`` where the
    server allows it) and nothing is checked out: enough to find a merge's artifacts by tree id.
    A failed attempt removes its directory before the error is raised (a retry starts afresh);
    workspaces of runs that died are swept first (:func:`tasks.workspace.sweep_orphans`).

    Args:
        repository: clone URL without credentials.
        sha: full commit id to check out (detached).
        token: forge token; sent as an ``http.extraHeader`` through ``GIT_CONFIG_*`` variables.
        token_user: user name paired with the token in Basic auth (GitHub: x-access-token, GitLab: oauth2).
        workdir: where to clone; ``src/`` of a new workspace (``tasks.workspace.new_workspace``) by default.
        files: check the files out (False: trees only).
    Raises:
        InvalidInput: a malformed SHA or a URL carrying credentials, before anything runs.
        RemoteError: the fetch failed (message redacted; the remote and commit are named).
    """
    from git import GitCommandError, Repo  # GitPython: the build role's (an edge node imports this module only)

    check_sha(sha)
    if "@" in repository.split("://", 1)[-1].split("/", 1)[0] and repository.startswith(("http://", "https://")):
        raise InvalidInput("the clone URL must not carry credentials; pass the token separately")
    logger = get_run_logger()
    if workdir:
        workspace, path = None, Path(workdir)
    else:
        sweep_orphans()
        workspace = new_workspace()
        path = workspace / "src"
    path.mkdir(parents=True, exist_ok=True)
    secrets = [token.get_secret_value()] if token else []
    env = auth_env(token, token_user)
    try:
        repo = Repo.init(path, bare=not files)
        if "origin" not in [r.name for r in repo.remotes]:
            repo.create_remote("origin", repository)
        options = {} if files else {"filter": "blob:none"}
        repo.git.fetch("origin", sha, depth=1, no_tags=True, env=env, kill_after_timeout=timeout, **options)
        if files:
            repo.git.checkout("--detach", "--force", sha)
    except GitCommandError as exc:
        shutil.rmtree(workspace or path, ignore_errors=True)
        detail = redact(str(exc.stderr or exc).strip(), secrets)
        raise RemoteError(f"could not fetch {sha[:12]} from {repository}: {detail}") from None
    except BaseException:
        shutil.rmtree(workspace or path, ignore_errors=True)
        raise
    logger.info("%s %s at %s in %s", "checked out" if files else "fetched the trees of", repository, sha[:12], path)
    checkout = Checkout(path=path, sha=sha, repository=repository, workspace=workspace, files=files)
    return replace(checkout, committed_at=checkout.commit_time())
