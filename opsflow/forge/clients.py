"""The GitHub, Gitea and GitLab clients: each forge's paths, auth header, pagination and state names."""

from __future__ import annotations

import re
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from opsflow.core.errors import InvalidInput, RemoteError
from opsflow.forge.api import (
    MAX_PAGES,
    Comment,
    CommitState,
    ForgeClient,
    PullRequestInfo,
    _check_status,
    _ForgeApi,
    _status_json,
    check_number,
)

# Permissions that may push to the repository (GitHub: role names too; Gitea: owner).
WRITE_PERMISSIONS = {"admin", "maintain", "write", "owner"}
GITLAB_DEVELOPER = 30  # GitLab access levels: 30 Developer, 40 Maintainer, 50 Owner


class _StatusesApi(_ForgeApi):
    """GitHub's commit status, pull request and collaborator permission calls, which Gitea copies (its states
    include ours one for one)."""

    def pull_request(self, repo: str, pr: int) -> PullRequestInfo:
        """The pull request (``GET /repos/{repo}/pulls/{pr}``) and its author's permission
        (``GET /repos/{repo}/collaborators/{user}/permission``; 404: not a collaborator)."""
        self._repo(repo)
        check_number(pr, "pull request number")
        url = self._url(f"/repos/{repo}/pulls/{pr}")
        data = self._json(self._send("GET", url, repo), f"GET {url}", dict)
        author = str((data.get("user") or {}).get("login") or "")
        head = (data.get("head") or {}).get("repo") or {}
        base = (data.get("base") or {}).get("repo") or {}
        from_fork = not head or head.get("full_name") != base.get("full_name") or bool(head.get("fork"))
        permission = ""
        if author:
            url = self._url(f"/repos/{repo}/collaborators/{quote(author, safe='')}/permission")
            resp = self._send("GET", url, repo, accept=lambda r: r.status_code in (403, 404))
            if resp.is_success:
                found = self._json(resp, f"GET {url}", dict)
                permission = str(found.get("role_name") or found.get("permission") or "")
                permission = permission if permission in WRITE_PERMISSIONS else str(found.get("permission") or "")
        labels = tuple(str(label.get("name")) for label in data.get("labels") or [] if isinstance(label, dict))
        return PullRequestInfo(pr, author, str((data.get("head") or {}).get("sha") or ""), from_fork,
                               permission in WRITE_PERMISSIONS, labels)

    def set_status(self, repo: str, sha: str, state: CommitState, context: str, description: str,
                   target_url: str | None = None) -> None:
        """Create a commit status on ``sha``; the latest status per ``context`` is what the forge shows."""
        self._repo(repo)
        state = _check_status(sha, state, context, description, target_url)
        self._send("POST", self._url(f"/repos/{repo}/statuses/{sha}"), repo,
                   json=_status_json(state.value, "context", context, description, target_url))


class GitHubClient(_StatusesApi):
    """GitHub's REST API (``https://api.github.com`` or ``https://ghe.example/api/v3``)."""

    name = "GitHub"

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28"}

    def _list_raw(self, repo: str, pr: int) -> list[dict]:
        url: str = self._url(f"/repos/{repo}/issues/{pr}/comments")
        params: dict[str, Any] | None = {"per_page": 100, "page": 1}
        items: list[dict] = []
        for _ in range(MAX_PAGES):
            resp = self._send("GET", url, repo, params=params)
            items += self._checked_items(self._json(resp, f"GET {url}", list), f"GET {url}")
            link = resp.links.get("next", {}).get("url")
            if not link:
                return items
            url, params = self._next_url(link), None  # the link carries page and per_page
        raise self._too_many_pages(url)

    def _comments_path(self, repo: str, pr: int) -> str:
        return f"/repos/{repo}/issues/{pr}/comments"

    def _comment_path(self, repo: str, pr: int, comment_id: int) -> tuple[str, str]:
        return "PATCH", f"/repos/{repo}/issues/comments/{comment_id}"


class GiteaClient(_StatusesApi):
    """Gitea's (and Forgejo's) API v1, e.g. ``https://gitea.lan/api/v1``."""

    name = "Gitea"
    page_size: ClassVar[int] = 50  # Gitea's default MAX_RESPONSE_ITEMS

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"token {token}", "Accept": "application/json"}

    def _list_raw(self, repo: str, pr: int) -> list[dict]:
        # Gitea answers with every comment of the issue and ignores page/limit. Asking page by
        # page anyway stays correct should a version paginate: stop on a short page, or on a
        # page that brings nothing new (the whole list again).
        url = self._url(f"/repos/{repo}/issues/{pr}/comments")
        items: dict[int, dict] = {}
        for page in range(1, MAX_PAGES + 1):
            resp = self._send("GET", url, repo, params={"page": page, "limit": self.page_size})
            batch = self._checked_items(self._json(resp, f"GET {url}", list), f"GET {url}")
            fresh = [r for r in batch if r["id"] not in items]
            items.update((r["id"], r) for r in fresh)
            if len(batch) < self.page_size or not fresh:
                return sorted(items.values(), key=lambda r: r["id"])
        raise self._too_many_pages(url)

    def _comments_path(self, repo: str, pr: int) -> str:
        return f"/repos/{repo}/issues/{pr}/comments"

    def _comment_path(self, repo: str, pr: int, comment_id: int) -> tuple[str, str]:
        return "PATCH", f"/repos/{repo}/issues/comments/{comment_id}"



GITLAB_STATES = {CommitState.pending: "pending", CommitState.success: "success",
                 CommitState.failure: "failed", CommitState.error: "failed"}


class GitLabClient(_ForgeApi):
    """GitLab's API v4, e.g. ``https://gitlab.lan/api/v4``; ``repo`` may name nested groups."""

    name = "GitLab"
    nested_repos = True

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {"PRIVATE-TOKEN": token, "Accept": "application/json"}

    @staticmethod
    def _project(repo: str) -> str:
        return quote(repo, safe="")

    def set_status(self, repo: str, sha: str, state: CommitState, context: str, description: str,
                   target_url: str | None = None) -> None:
        """Create or move the external status ``context`` on ``sha`` (failure and error → failed).

        GitLab answers 400 "Cannot transition status via :enqueue from :pending" when a pending
        status is set to pending again; that is taken as success.
        """
        self._repo(repo)
        gl_state = GITLAB_STATES[_check_status(sha, state, context, description, target_url)]

        def already(resp: httpx.Response) -> bool:
            return (resp.status_code == 400 and gl_state == "pending"
                    and "Cannot transition status" in resp.text and "from :pending" in resp.text)

        self._send("POST", self._url(f"/projects/{self._project(repo)}/statuses/{sha}"), repo,
                   json=_status_json(gl_state, "name", context, description, target_url), accept=already)

    def _list_raw(self, repo: str, pr: int) -> list[dict]:
        url = self._url(f"/projects/{self._project(repo)}/merge_requests/{pr}/notes")
        params = {"per_page": 100, "page": 1, "sort": "asc", "order_by": "created_at"}
        items: list[dict] = []
        for _ in range(MAX_PAGES):
            resp = self._send("GET", url, repo, params=params)
            items += self._checked_items(self._json(resp, f"GET {url}", list), f"GET {url}")
            nxt = resp.headers.get("X-Next-Page", "").strip()
            if not nxt:
                return [r for r in items if not r.get("system")]
            if not nxt.isdigit() or int(nxt) <= params["page"]:
                raise RemoteError(f"GitLab API: GET {url} sent X-Next-Page {nxt!r} after page {params['page']}")
            params = {**params, "page": int(nxt)}
        raise self._too_many_pages(url)

    def _comments_path(self, repo: str, pr: int) -> str:
        return f"/projects/{self._project(repo)}/merge_requests/{pr}/notes"

    def _comment_path(self, repo: str, pr: int, comment_id: int) -> tuple[str, str]:
        return "PUT", f"/projects/{self._project(repo)}/merge_requests/{pr}/notes/{comment_id}"

    def pull_request(self, repo: str, pr: int) -> PullRequestInfo:
        """The merge request (``GET /projects/:id/merge_requests/:iid``) and its author's membership
        (``GET /projects/:id/members/all/:user_id``, inherited members included; 404: not a member)."""
        self._repo(repo)
        check_number(pr, "merge request iid")
        url = self._url(f"/projects/{self._project(repo)}/merge_requests/{pr}")
        data = self._json(self._send("GET", url, repo), f"GET {url}", dict)
        author = data.get("author") or {}
        level = 0
        if isinstance(author.get("id"), int):
            url = self._url(f"/projects/{self._project(repo)}/members/all/{author['id']}")
            resp = self._send("GET", url, repo, accept=lambda r: r.status_code == 404)
            if resp.is_success:
                level = int(self._json(resp, f"GET {url}", dict).get("access_level") or 0)
        from_fork = data.get("source_project_id") != data.get("target_project_id")
        labels = tuple(str(label.get("name") if isinstance(label, dict) else label)
                       for label in data.get("labels") or [])
        return PullRequestInfo(pr, str(author.get("username") or ""), str(data.get("sha") or ""), from_fork,
                               level >= GITLAB_DEVELOPER, labels)

    def _comment(self, raw: dict, repo: str, pr: int) -> Comment:
        # Notes carry no web URL; build it from the instance's address (api_url without /api/v4).
        web = re.sub(r"/api/v4$", "", self.api_url)
        return Comment(id=int(raw["id"]), body=raw.get("body") or "",
                       url=f"{web}/{repo}/-/merge_requests/{pr}#note_{raw['id']}")



CLIENTS: dict[str, type[_ForgeApi]] = {"github": GitHubClient, "gitea": GiteaClient, "gitlab": GitLabClient}


def forge_client(kind: str, api_url: str, token: str, timeout: float = 15) -> ForgeClient:
    """The client for a forge ``kind`` (github, gitea, gitlab) at ``api_url``.

    Raises:
        InvalidInput: an unknown kind, a bad URL or an empty token.
    """
    try:
        cls = CLIENTS[kind]
    except KeyError:
        raise InvalidInput(f"{kind!r} is not a supported forge: use one of {', '.join(CLIENTS)}") from None
    return cls(api_url, token, timeout)
