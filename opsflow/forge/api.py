"""The forge API plumbing the GitHub, Gitea and GitLab clients share: the interface, retries, errors.

One small interface, :class:`ForgeClient`, over GitHub's REST API, Gitea's API v1 and GitLab's
API v4. Every input is validated before a request is made. Requests are retried a bounded number
of times on network errors, timeouts, 429 and 5xx; other 4xx answers fail at once. The token
travels in a header only, and is removed from every message this module logs or raises.

Over 300 lines: the retries, the probe that keeps a retried POST from commenting twice, and the
pagination guards are one class that the three clients (``opsflow.forge.clients``) share.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol, Self, runtime_checkable
from urllib.parse import urlsplit

import httpx

from blocks.fields import (
    check_body,
    check_context,
    check_description,
    check_number,
    check_repo,
    check_sha,
    check_url,
)
from opsflow.core.errors import InvalidInput, RemoteError, RemoteUnavailable
from opsflow.core.redact import redact
from opsflow.core.tls import default_context

log = logging.getLogger(__name__)

# The retry policy. Module-level so tests can shorten the waits (never the number of attempts).
ATTEMPTS = 4
BACKOFF_S = 0.5  # first wait; doubles on every attempt
MAX_DELAY_S = 30.0  # cap on any wait, including one a Retry-After header asks for
MAX_PAGES = 500  # a server that keeps linking "next" is not followed forever
USER_AGENT = "opsflow"

_sleep = time.sleep


class CommitState(StrEnum):
    """The state of a commit status, as opsflow reports it (mapped to each forge's own names)."""

    pending = "pending"
    success = "success"
    failure = "failure"
    error = "error"


@dataclass(frozen=True)
class Comment:
    """A comment on a pull/merge request: its id, its markdown body and a link to it."""

    id: int
    body: str
    url: str


@dataclass(frozen=True)
class PullRequestInfo:
    """What decides whether a pull request's code is trusted: where it comes from, who wrote it, its labels."""

    number: int
    author: str
    head_sha: str
    from_fork: bool
    author_can_write: bool  # the forge lists the author as a collaborator/member with write access
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class CommentRef:
    """The comment an upsert wrote to, and whether it had to be created."""

    id: int
    url: str
    created: bool


@runtime_checkable
class ForgeClient(Protocol):
    """What opsflow does on a forge: set commit statuses, list/create/update PR comments, read a pull request
    and whether its author may write to the repository.

    ``repo`` is ``owner/name`` (GitLab also takes nested groups: ``group/sub/name``); ``pr`` is the
    pull request number (GitLab: the merge request iid). Close the client, or use it in ``with``.
    """

    def set_status(self, repo: str, sha: str, state: CommitState, context: str, description: str,
                   target_url: str | None = None) -> None: ...

    def list_comments(self, repo: str, pr: int) -> list[Comment]: ...

    def create_comment(self, repo: str, pr: int, body: str) -> Comment: ...

    def update_comment(self, repo: str, pr: int, comment_id: int, body: str) -> Comment: ...

    def pull_request(self, repo: str, pr: int) -> PullRequestInfo: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...


def check_state(state: CommitState | str) -> CommitState:
    """``state`` as a :class:`CommitState`."""
    try:
        return CommitState(state)
    except ValueError:
        raise InvalidInput(f"{state!r} is not a commit state: use one of "
                           f"{', '.join(s.value for s in CommitState)}") from None


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds the server asked us to wait (Retry-After, or GitHub's rate-limit reset), if any."""
    value = resp.headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    if resp.headers.get("X-RateLimit-Remaining") == "0" and resp.headers.get("X-RateLimit-Reset", "").isdigit():
        return max(0.0, int(resp.headers["X-RateLimit-Reset"]) - time.time())
    return None


def _is_transient(resp: httpx.Response) -> bool:
    """429, 5xx, and GitHub's rate-limit 403 (which carries Retry-After or a zero remaining count)."""
    if resp.status_code == 429 or resp.status_code >= 500:
        return True
    return resp.status_code == 403 and (
        "Retry-After" in resp.headers or resp.headers.get("X-RateLimit-Remaining") == "0")


def _same_text(a: str, b: str) -> bool:
    return a.replace("\r\n", "\n").strip() == b.replace("\r\n", "\n").strip()


class _ForgeApi:
    """The HTTP plumbing the three clients share: headers, retries, errors, pagination guards."""

    name: ClassVar[str]
    nested_repos: ClassVar[bool] = False

    def __init__(self, api_url: str, token: str, timeout: float = 15):
        self.api_url = check_url(api_url)
        if not isinstance(token, str) or not token.strip():
            raise InvalidInput(f"a {self.name} token is required")
        self._token = token
        self._timeout = timeout
        self._http = httpx.Client(timeout=timeout, follow_redirects=False, verify=default_context(),
                                  headers={"User-Agent": USER_AGENT, **self._auth_headers(token)})

    def _auth_headers(self, token: str) -> dict[str, str]:
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.api_url!r})"

    # -- requests ------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.api_url + path

    def _redact(self, text: str) -> str:
        return redact(text, [self._token])

    def _detail(self, resp: httpx.Response) -> str:
        """The forge's own error message, short and without the token."""
        try:
            data = resp.json()
        except ValueError:
            text = resp.text
        else:
            if isinstance(data, dict):
                text = str(data.get("message") or data.get("error") or data)
                errors = data.get("errors")
                if errors:
                    text += f" {errors}"
            else:
                text = str(data)
        text = " ".join(text.split())
        return self._redact(text[:300] + ("..." if len(text) > 300 else "")) or "(no message)"

    def _refused(self, method: str, shown: str, resp: httpx.Response, repo: str) -> RemoteError:
        """The error for an answer that retrying will not change, saying what to check."""
        code = resp.status_code
        if code == 401:
            hint = ("the token was rejected: check the token in the GitForge block (expired, revoked, "
                    f"or issued by another forge than {self.api_url})")
        elif code == 403:
            hint = (f"the token may not do this: check the token's scopes/permissions on {repo} "
                    "(it needs to write commit statuses and comment on pull requests)")
        elif code == 404:
            hint = (f"not found: check the repository {repo!r}, the commit or PR number, and the token's scopes "
                    "(forges answer 404 for repositories a token cannot see)")
        elif code in (400, 409, 422):
            hint = "the forge rejected the request's content"
        elif 300 <= code < 400:
            hint = f"the API redirected to {resp.headers.get('Location', '?')}: check api_url in the GitForge block"
        else:
            hint = "unexpected answer; check api_url and the forge's logs"
        return RemoteError(f"{self.name} API: {method} {shown} answered {code} {resp.reason_phrase}: "
                           f"{self._detail(resp)}; {self._redact(hint)}")

    def _send(self, method: str, url: str, repo: str, *, params: dict[str, Any] | None = None,
              json: Any = None, probe: Callable[[], Any] | None = None,
              accept: Callable[[httpx.Response], bool] | None = None) -> httpx.Response:
        """One API call with bounded retries; returns a 2xx response or raises :class:`RemoteError`.

        ``probe`` guards requests that are not idempotent: before re-sending one that may already
        have been applied (a timeout or 5xx after the request went out), it looks for the result,
        and a non-None value is returned as the answer instead of repeating the request.
        ``accept`` lets a caller take a non-2xx answer as success (e.g. "already in that state").
        """
        shown = str(httpx.URL(url, params=params)) if params else url
        cause = ""
        for attempt in range(1, ATTEMPTS + 1):
            delay = BACKOFF_S * 2 ** (attempt - 1)
            maybe_applied = True
            try:
                resp = self._http.request(method, url, params=params, json=json)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                cause, maybe_applied = f"could not connect ({type(exc).__name__}: {exc})", False
            except httpx.TimeoutException as exc:
                cause = f"no answer within {self._timeout:g} s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                cause = f"connection failed ({type(exc).__name__}: {exc})"
            else:
                if resp.is_success or (accept is not None and accept(resp)):
                    return resp
                if not _is_transient(resp):
                    raise self._refused(method, shown, resp, repo)
                cause = f"{resp.status_code} {resp.reason_phrase}: {self._detail(resp)}"
                maybe_applied = resp.status_code not in (403, 429)
                wait = _retry_after(resp)
                if wait is not None:
                    delay = max(delay, wait)
            if attempt == ATTEMPTS:
                break
            if maybe_applied and probe is not None:
                found = probe()
                if found is not None:
                    log.warning("%s %s: %s, but it had been applied; not repeating it",
                                method, shown, self._redact(cause))
                    return httpx.Response(200, json=found, request=httpx.Request(method, url))
            delay = min(delay, MAX_DELAY_S)
            log.warning("%s %s: %s; retry %d of %d in %.1f s", method, shown, self._redact(cause),
                        attempt, ATTEMPTS - 1, delay)
            _sleep(delay)
        raise RemoteUnavailable(f"{self.name} API: {method} {shown} failed after {ATTEMPTS} attempts: "
                          f"{self._redact(cause)}; check that {self.api_url} is reachable from here and retry later "
                          "(the forge may be down or rate-limiting)")

    def _json(self, resp: httpx.Response, shown: str, kind: type) -> Any:
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, kind):
            raise RemoteError(f"{self.name} API: {shown} answered {resp.status_code} without the expected JSON "
                              f"{kind.__name__}: {self._detail(resp)}; is {self.api_url} the {self.name} API URL?")
        return data

    def _next_url(self, link: str) -> str:
        """A pagination link, refused unless it points into our API (the token goes with it)."""
        ours, theirs = urlsplit(self.api_url), urlsplit(link)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc) or not theirs.path.startswith(ours.path):
            raise RemoteError(f"{self.name} API: refusing to follow a pagination link outside {self.api_url}: "
                              f"{self._redact(link)}")
        return link

    def _too_many_pages(self, url: str) -> RemoteError:
        return RemoteError(f"{self.name} API: GET {url} returned more than {MAX_PAGES} pages; "
                           "stopped following them")

    # -- the interface -------------------------------------------------------------------------

    def _repo(self, repo: str) -> str:
        return check_repo(repo, nested=self.nested_repos)

    def list_comments(self, repo: str, pr: int) -> list[Comment]:
        """Every comment on pull request ``pr`` (all pages), oldest first."""
        self._repo(repo)
        check_number(pr, "pull request number")
        return [self._comment(raw, repo, pr) for raw in self._list_raw(repo, pr)]

    def create_comment(self, repo: str, pr: int, body: str) -> Comment:
        """Add a comment to pull request ``pr`` and return it.

        A retry after an ambiguous failure first checks whether the comment was made after all.
        """
        self._repo(repo)
        check_number(pr, "pull request number")
        check_body(body)

        def already_there() -> dict | None:
            try:
                raws = self._list_raw(repo, pr)
            except RemoteError:
                return None
            newest = max(raws, key=lambda r: r["id"], default=None)
            return newest if newest is not None and _same_text(newest.get("body") or "", body) else None

        url = self._url(self._comments_path(repo, pr))
        resp = self._send("POST", url, repo, json={"body": body}, probe=already_there)
        return self._comment(self._json(resp, f"POST {url}", dict), repo, pr)

    def update_comment(self, repo: str, pr: int, comment_id: int, body: str) -> Comment:
        """Replace the body of comment ``comment_id`` on pull request ``pr`` and return it."""
        self._repo(repo)
        check_number(pr, "pull request number")
        check_number(comment_id, "comment id")
        check_body(body)
        method, path = self._comment_path(repo, pr, comment_id)
        url = self._url(path)
        resp = self._send(method, url, repo, json={"body": body})
        if not resp.content:  # some forge versions answer an edit with 204 and no body
            return Comment(comment_id, body, "")
        return self._comment(self._json(resp, f"{method} {url}", dict), repo, pr)

    # -- per forge -----------------------------------------------------------------------------

    def _list_raw(self, repo: str, pr: int) -> list[dict]:
        raise NotImplementedError

    def _comments_path(self, repo: str, pr: int) -> str:
        raise NotImplementedError

    def _comment_path(self, repo: str, pr: int, comment_id: int) -> tuple[str, str]:
        raise NotImplementedError

    def _comment(self, raw: dict, repo: str, pr: int) -> Comment:
        return Comment(id=int(raw["id"]), body=raw.get("body") or "", url=raw.get("html_url") or "")

    def _checked_items(self, data: list, shown: str) -> list[dict]:
        if not all(isinstance(r, dict) and isinstance(r.get("id"), int) for r in data):
            raise RemoteError(f"{self.name} API: {shown} returned comments without an integer id")
        return data


def _check_status(sha: str, state: CommitState | str, context: str, description: str,
                  target_url: str | None) -> CommitState:
    """Validate a status's fields (all of them, before any request) and return its state."""
    check_sha(sha)
    check_context(context)
    check_description(description)
    if target_url is not None:
        check_url(target_url)
    return check_state(state)


def _status_json(state: str, context_key: str, context: str, description: str, target_url: str | None) -> dict:
    body = {"state": state, context_key: context, "description": description}
    if target_url:
        body["target_url"] = target_url
    return body


