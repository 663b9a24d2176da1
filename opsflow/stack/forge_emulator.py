"""A local forge: the GitHub, Gitea and GitLab endpoints opsflow calls, served over real HTTP.

One ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) serves the three APIs under their own
prefixes (``/github``, ``/gitea/api/v1``, ``/gitlab/api/v4``). Like the real APIs it checks each
forge's auth header (401 otherwise), validates status states per forge, keeps statuses and
comments in memory, paginates comment lists (GitHub: ``Link``, per_page 30/100; GitLab:
``X-Next-Page``, per_page 20/100, newest first unless ``sort=asc``; Gitea: all at once) and records
every request. ``fail_next``/``stall_next`` inject failures for retry tests. Pull requests and who may
write to a repository (``add_pull_request``, ``set_permission``, ``add_label``; a pull request it was not
told about is one of the repository's own, by ``opsflow-dev``, a collaborator with write access) are served
as the documented reads: GitHub/Gitea ``GET /repos/{o}/{r}/pulls/{n}`` and
``GET /repos/{o}/{r}/collaborators/{user}/permission``; GitLab ``GET /projects/:id/merge_requests/:iid``
and ``GET /projects/:id/members/all/:user_id``. (Over 300 lines: one server for three forges, whose
endpoints differ in paths, auth, states and pagination.)

It is the local stack's stand-in for a forge, as moto is for MinIO: the demo reports its MLOps pull
requests to it, and the tests use it through the ``forge`` fixture (``tests/support``)::

    def test_x(forge):
        block = forge.block("gitlab")           # a GitForge pointing at the emulator
        ...
        assert forge.statuses("gitlab", "o/r", sha)[-1]["state"] == "failed"
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from opsflow.core.threads import start_thread

TOKEN = "opsflow-emulated-forge-token-7d3f2a91c4"  # noqa: S105 - the emulator's own fake token
DEFAULT_AUTHOR = "opsflow-dev"  # the author of pull requests nobody registered: a collaborator with write access
PREFIXES = {"github": "/github", "gitea": "/gitea/api/v1", "gitlab": "/gitlab/api/v4"}
STATES = {
    "github": {"pending", "success", "failure", "error"},
    "gitea": {"pending", "success", "error", "failure", "warning"},
    "gitlab": {"pending", "running", "success", "failed", "canceled"},
}
_SEG = r"([^/]+)"
_SHA = re.compile(r"^[0-9a-fA-F]{40}$|^[0-9a-fA-F]{64}$")


_MISSING_BODY = {"message": "Validation Failed", "errors": [{"field": "body", "code": "missing_field"}]}


@dataclass(frozen=True)
class Request:
    """One request as the emulator received it (``path`` is still percent-encoded)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    target: str  # path and query exactly as sent

    @property
    def kind(self) -> str | None:
        return next((k for k, p in PREFIXES.items() if self.path.startswith(p + "/")), None)


@dataclass
class _Fault:
    remaining: int
    status: int | None  # None: answer normally, only late
    path_contains: str
    method: str | None
    retry_after: str | None = None
    applied: bool = False
    delay: float = 0.0

    def matches(self, method: str, target: str) -> bool:
        return self.remaining > 0 and self.path_contains in target and self.method in (None, method)


@dataclass
class _Answer:
    status: int
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class ForgeEmulator:
    """The three forge APIs over HTTP, with in-memory state and a request log."""

    def __init__(self, token: str = TOKEN):
        self.token = token
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, address: None  # clients that gave up: not our error
        self._thread: threading.Thread | None = None
        self.reset()

    # -- lifecycle and test helpers ------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url_for(self, kind: str) -> str:
        """The API base URL of ``kind`` (what goes in a GitForge block's ``api_url``)."""
        return self.url + PREFIXES[kind]

    def block(self, kind: str, token: str | None = None, timeout: float = 5.0):
        """A GitForge block for ``kind`` on this emulator (with the right token unless one is given)."""
        from blocks import GitForge

        return GitForge(kind=kind, api_url=self.url_for(kind), token=token or self.token, timeout=timeout)

    def start(self) -> ForgeEmulator:
        self._thread = start_thread(self._server.serve_forever, name="forge-emulator")
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def reset(self) -> None:
        """Forget statuses, comments, recorded requests and pending faults."""
        with self._lock:
            self._requests: list[Request] = []
            self._statuses: dict[tuple[str, str, str], list[dict]] = {}
            self._comments: dict[tuple[str, str, int], list[dict]] = {}
            self._faults: list[_Fault] = []
            self._ids = itertools.count(1001)
            self._pulls: dict[tuple[str, str, int], dict] = {}
            self._permissions: dict[tuple[str, str, str], str] = {}

    @property
    def requests(self) -> list[Request]:
        """Every request received since the last reset, in order."""
        with self._lock:
            return list(self._requests)

    def statuses(self, kind: str, repo: str, sha: str) -> list[dict]:
        """The statuses posted on ``sha``, oldest first: state (the forge's name), context, description, target_url."""
        with self._lock:
            return [dict(s) for s in self._statuses.get((kind, repo, sha), [])]

    def comments(self, kind: str, repo: str, pr: int, system: bool = False) -> list[dict]:
        """The comments on ``pr``, oldest first (GitLab system notes only with ``system=True``)."""
        with self._lock:
            return [dict(c) for c in self._comments.get((kind, repo, pr), []) if system or not c["system"]]

    def add_comment(self, kind: str, repo: str, pr: int, body: str, system: bool = False) -> int:
        """Put a comment there directly (as another user would), without a request; returns its id."""
        with self._lock:
            return self._add_comment(kind, repo, pr, body, system)["id"]

    def add_pull_request(self, kind: str, repo: str, pr: int, author: str, head_sha: str, *,
                         fork_of: str | None = None, labels: tuple[str, ...] = ()) -> None:
        """A pull request by ``author`` at ``head_sha``; from a fork (``fork_of``: the fork's owner/name) or not."""
        with self._lock:
            self._pulls[(kind, repo, pr)] = {"author": author, "author_id": _user_id(author), "sha": head_sha,
                                             "head_repo": fork_of or repo, "labels": list(labels)}

    def add_label(self, kind: str, repo: str, pr: int, label: str) -> None:
        """A maintainer adds ``label`` to the pull request."""
        with self._lock:
            self._pulls[(kind, repo, pr)]["labels"].append(label)

    def set_permission(self, kind: str, repo: str, user: str, permission: str) -> None:
        """What ``user`` may do on ``repo``: admin/maintain/write/read/none (GitLab: as access levels)."""
        with self._lock:
            self._permissions[(kind, repo, user)] = permission

    def fail_next(self, n: int, status: int, path_contains: str = "", *, method: str | None = None,
                  retry_after: str | None = None, applied: bool = False) -> None:
        """Answer the next ``n`` matching requests with ``status``.

        ``applied``: carry the request out first, then answer with the error (a lost answer).
        """
        with self._lock:
            self._faults.append(_Fault(n, status, path_contains, method, retry_after, applied))

    def stall_next(self, n: int, seconds: float, path_contains: str = "", *, method: str | None = None) -> None:
        """Carry out the next ``n`` matching requests at once but answer them ``seconds`` late."""
        with self._lock:
            self._faults.append(_Fault(n, None, path_contains, method, applied=True, delay=seconds))

    # -- request handling ----------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw_body: bytes) -> _Answer:
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = {k: v[-1] for k, v in parse_qs(raw_body.decode(errors="replace")).items()}
        request = Request(method, parts.path, query, headers, body, target)
        with self._lock:
            self._requests.append(request)
            fault = next((f for f in self._faults if f.matches(method, target)), None)
            if fault is not None:
                fault.remaining -= 1
                if not fault.applied:
                    return self._fault_answer(fault)
            answer = self._route(request)
        if fault is None:
            return answer
        if fault.status is None:
            answer.delay = fault.delay
            return answer
        return self._fault_answer(fault)

    @staticmethod
    def _fault_answer(fault: _Fault) -> _Answer:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        return _Answer(fault.status, {"message": f"injected {fault.status}"}, headers, fault.delay)

    def _route(self, req: Request) -> _Answer:
        kind = req.kind
        if kind is None:
            return _Answer(404, {"message": "Not Found"})
        denied = self._check_auth(kind, req.headers)
        if denied is not None:
            return denied
        path = req.path[len(PREFIXES[kind]):]
        routes = _GITLAB_ROUTES if kind == "gitlab" else _REPO_ROUTES
        for method, pattern, handler in routes:
            match = pattern.fullmatch(path)
            if match and method == req.method:
                return handler(self, kind, req, *match.groups())
        return _Answer(404, {"message": "Not Found" if kind != "gitlab" else "404 Not Found"})

    def _check_auth(self, kind: str, headers: dict[str, str]) -> _Answer | None:
        h = {k.lower(): v for k, v in headers.items()}
        auth = h.get("authorization", "")
        if kind == "github":
            if not h.get("user-agent"):
                return _Answer(403, {"message": "Request forbidden by administrative rules. "
                                                "Please make sure your request has a User-Agent header"})
            ok = auth in (f"Bearer {self.token}", f"token {self.token}")
            return None if ok else _Answer(401, {"message": "Bad credentials" if auth else "Requires authentication"})
        if kind == "gitea":
            ok = auth in (f"token {self.token}", f"Bearer {self.token}")
            return None if ok else _Answer(401, {"message": "token is required" if not auth else "invalid token"})
        ok = h.get("private-token") == self.token or auth == f"Bearer {self.token}"
        return None if ok else _Answer(401, {"message": "401 Unauthorized"})

    def _add_comment(self, kind: str, repo: str, pr: int, body: str, system: bool = False) -> dict:
        cid = next(self._ids)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        comment = {"id": cid, "body": body, "system": system, "repo": repo, "pr": pr,
                   "created_at": now, "updated_at": now}
        self._comments.setdefault((kind, repo, pr), []).append(comment)
        return comment

    def _find_comment(self, kind: str, repo: str, cid: int, pr: int | None = None) -> dict | None:
        for (k, r, p), items in self._comments.items():
            if k == kind and r == repo and pr in (None, p):
                for c in items:
                    if c["id"] == cid:
                        return c
        return None

    def _comment_json(self, kind: str, c: dict) -> dict:
        user = {"login": "opsflow-bot", "id": 7}
        if kind == "gitlab":
            return {"id": c["id"], "type": None, "body": c["body"], "system": c["system"], "author": user,
                    "created_at": c["created_at"], "updated_at": c["updated_at"], "noteable_type": "MergeRequest",
                    "noteable_iid": c["pr"]}
        web = "https://github.com" if kind == "github" else self.url + "/gitea"
        pulls = "pull" if kind == "github" else "pulls"
        return {"id": c["id"], "body": c["body"], "user": user, "created_at": c["created_at"],
                "updated_at": c["updated_at"],
                "html_url": f"{web}/{c['repo']}/{pulls}/{c['pr']}#issuecomment-{c['id']}"}

    # -- GitHub and Gitea ----------------------------------------------------------------------

    def _create_status(self, kind: str, req: Request, owner: str, name: str, sha: str) -> _Answer:
        body = req.body if isinstance(req.body, dict) else {}
        repo = f"{owner}/{name}"
        invalid = 422 if kind == "github" else 400
        if not _SHA.match(sha):
            return _Answer(422, {"message": f"No commit found for SHA: {sha}"})
        if body.get("state") not in STATES[kind]:
            return _Answer(invalid, {"message": "Validation Failed", "errors": [
                {"resource": "Status", "field": "state", "code": "invalid"}]})
        description = body.get("description") or ""
        if kind == "github" and len(description) > 140:
            return _Answer(422, {"message": "Validation Failed", "errors": [
                {"resource": "Status", "field": "description", "code": "custom",
                 "message": "description is too long (maximum is 140 characters)"}]})
        status = {"id": next(self._ids), "state": body["state"], "context": body.get("context") or "default",
                  "description": description, "target_url": body.get("target_url")}
        self._statuses.setdefault((kind, repo, sha), []).append(status)
        out = dict(status)
        if kind == "gitea":  # Gitea's CommitStatus calls the state "status"
            out["status"] = out.pop("state")
        return _Answer(201, out)

    def _list_comments(self, kind: str, req: Request, owner: str, name: str, number: str) -> _Answer:
        items = [c for c in self._comments.get((kind, f"{owner}/{name}", int(number)), []) if not c["system"]]
        if kind == "gitea":  # Gitea answers with every comment of the issue and ignores page/limit
            return _Answer(200, [self._comment_json(kind, c) for c in items], {"X-Total-Count": str(len(items))})
        per_page = min(max(_int(req.query, "per_page", 30), 1), 100)
        page = max(_int(req.query, "page", 1), 1)
        last = max((len(items) + per_page - 1) // per_page, 1)
        chunk = items[(page - 1) * per_page: page * per_page]
        base = f"{self.url}{req.path}?"
        links = []
        if page < last:
            links += [f'<{base}{urlencode({"per_page": per_page, "page": page + 1})}>; rel="next"',
                      f'<{base}{urlencode({"per_page": per_page, "page": last})}>; rel="last"']
        if page > 1:
            links += [f'<{base}{urlencode({"per_page": per_page, "page": page - 1})}>; rel="prev"',
                      f'<{base}{urlencode({"per_page": per_page, "page": 1})}>; rel="first"']
        headers = {"Link": ", ".join(links)} if links else {}
        return _Answer(200, [self._comment_json(kind, c) for c in chunk], headers)

    def _create_comment(self, kind: str, req: Request, owner: str, name: str, number: str) -> _Answer:
        body = req.body.get("body") if isinstance(req.body, dict) else None
        if not isinstance(body, str) or not body:
            return _Answer(422, _MISSING_BODY)
        return _Answer(201, self._comment_json(kind, self._add_comment(kind, f"{owner}/{name}", int(number), body)))

    def _edit_comment(self, kind: str, req: Request, owner: str, name: str, cid: str) -> _Answer:
        comment = self._find_comment(kind, f"{owner}/{name}", int(cid))
        body = req.body.get("body") if isinstance(req.body, dict) else None
        if comment is None:
            return _Answer(404, {"message": "Not Found"})
        if not isinstance(body, str) or not body:
            return _Answer(422, _MISSING_BODY)
        comment["body"] = body
        comment["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return _Answer(200, self._comment_json(kind, comment))

    def _pull(self, kind: str, repo: str, number: int) -> dict:
        return self._pulls.get((kind, repo, number)) or {
            "author": DEFAULT_AUTHOR, "author_id": _user_id(DEFAULT_AUTHOR), "sha": "0" * 40, "head_repo": repo,
            "labels": []}

    def _permission_of(self, kind: str, repo: str, user: str) -> str | None:
        return self._permissions.get((kind, repo, user), "write" if user == DEFAULT_AUTHOR else None)

    def _get_pull(self, kind: str, req: Request, owner: str, name: str, number: str) -> _Answer:
        repo = f"{owner}/{name}"
        pull = self._pull(kind, repo, int(number))
        head_owner = pull["head_repo"].split("/", 1)[0]
        return _Answer(200, {
            "number": int(number), "state": "open", "user": {"login": pull["author"], "id": pull["author_id"]},
            "head": {"sha": pull["sha"], "ref": "feature", "repo": {"full_name": pull["head_repo"],
                                                                    "owner": {"login": head_owner},
                                                                    "fork": pull["head_repo"] != repo}},
            "base": {"ref": "main", "repo": {"full_name": repo, "owner": {"login": owner}, "fork": False}},
            "labels": [{"name": label} for label in pull["labels"]]})

    def _permission(self, kind: str, req: Request, owner: str, name: str, user: str) -> _Answer:
        permission = self._permission_of(kind, f"{owner}/{name}", unquote(user))
        if permission is None:  # not a collaborator
            return _Answer(404, {"message": "Not Found"} if kind == "github" else {"message": "not a collaborator"})
        return _Answer(200, {"permission": "write" if permission == "maintain" else permission,
                             "role_name": permission, "user": {"login": unquote(user)}})

    # -- GitLab --------------------------------------------------------------------------------

    def _gl_get_mr(self, kind: str, req: Request, project: str, iid: str) -> _Answer:
        repo = unquote(project)
        pull = self._pull(kind, repo, int(iid))
        return _Answer(200, {"iid": int(iid), "state": "opened", "sha": pull["sha"],
                             "author": {"id": pull["author_id"], "username": pull["author"]},
                             "source_project_id": _project_id(pull["head_repo"]),
                             "target_project_id": _project_id(repo),
                             "labels": list(pull["labels"])})

    def _gl_member(self, kind: str, req: Request, project: str, user_id: str) -> _Answer:
        repo = unquote(project)
        users = {user for (k, r, user) in self._permissions if (k, r) == (kind, repo)} | {DEFAULT_AUTHOR}
        for user in users:
            permission = self._permission_of(kind, repo, user)
            if _user_id(user) == int(user_id) and permission is not None:
                levels = {"read": 20, "write": 30, "maintain": 40, "admin": 50}
                return _Answer(200, {"id": int(user_id), "username": user, "access_level": levels.get(permission, 0)})
        return _Answer(404, {"message": "404 Not found"})


    def _gl_params(self, req: Request) -> dict:
        params = {k: v[-1] for k, v in req.query.items()}
        if isinstance(req.body, dict):
            params.update(req.body)
        return params

    def _gl_status(self, kind: str, req: Request, project: str, sha: str) -> _Answer:
        params = self._gl_params(req)
        repo, state = unquote(project), params.get("state")
        if not _SHA.match(sha):
            return _Answer(404, {"message": "404 Commit Not Found"})
        if state not in STATES["gitlab"]:
            return _Answer(400, {"error": "state does not have a valid value"})
        name = params.get("name") or params.get("context") or "default"
        statuses = self._statuses.setdefault((kind, repo, sha), [])
        # GitLab reuses the running/pending status of that name; re-entering its state is refused.
        current = next((s for s in reversed(statuses) if s["context"] == name), None)
        if current and current["state"] in ("pending", "running") and current["state"] == state:
            event = "enqueue" if state == "pending" else "run"
            return _Answer(400, {"message": f"Cannot transition status via :{event} from :{state}"})
        status = {"id": next(self._ids), "state": state, "context": name,
                  "description": params.get("description"), "target_url": params.get("target_url")}
        statuses.append(status)
        return _Answer(201, {"id": status["id"], "sha": sha, "ref": None, "status": state, "name": name,
                             "description": status["description"], "target_url": status["target_url"]})

    def _gl_list_notes(self, kind: str, req: Request, project: str, iid: str) -> _Answer:
        items = list(self._comments.get((kind, unquote(project), int(iid)), []))
        order = "updated_at" if req.query.get("order_by", [""])[-1] == "updated_at" else "created_at"
        items.sort(key=lambda c: (c[order], c["id"]), reverse=req.query.get("sort", ["desc"])[-1] != "asc")
        per_page = min(max(_int(req.query, "per_page", 20), 1), 100)
        page = max(_int(req.query, "page", 1), 1)
        pages = max((len(items) + per_page - 1) // per_page, 1)
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {"X-Page": str(page), "X-Per-Page": str(per_page), "X-Total": str(len(items)),
                   "X-Total-Pages": str(pages), "X-Next-Page": str(page + 1) if page < pages else "",
                   "X-Prev-Page": str(page - 1) if page > 1 else ""}
        return _Answer(200, [self._comment_json(kind, c) for c in chunk], headers)

    def _gl_create_note(self, kind: str, req: Request, project: str, iid: str) -> _Answer:
        body = self._gl_params(req).get("body")
        if not isinstance(body, str) or not body:
            return _Answer(400, {"error": "body is missing"})
        return _Answer(201, self._comment_json(kind, self._add_comment(kind, unquote(project), int(iid), body)))

    def _gl_edit_note(self, kind: str, req: Request, project: str, iid: str, note_id: str) -> _Answer:
        note = self._find_comment(kind, unquote(project), int(note_id), int(iid))
        body = self._gl_params(req).get("body")
        if note is None:
            return _Answer(404, {"message": "404 Not found"})
        if not isinstance(body, str) or not body:
            return _Answer(400, {"error": "body is missing"})
        note["body"] = body
        note["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return _Answer(200, self._comment_json(kind, note))


def _user_id(login: str) -> int:
    """A stable numeric id for a user name (GitLab addresses members by id)."""
    return int.from_bytes(login.encode()[:6].ljust(6, b"\0"), "big") % 10_000_000 + 1


def _project_id(repo: str) -> int:
    return sum(repo.encode()) * 31 + len(repo)


def _int(query: dict[str, list[str]], key: str, default: int) -> int:
    try:
        return int(query[key][-1])
    except (KeyError, ValueError):
        return default


_REPO_ROUTES = [
    ("GET", re.compile(rf"/repos/{_SEG}/{_SEG}/pulls/([0-9]+)"), ForgeEmulator._get_pull),
    ("GET", re.compile(rf"/repos/{_SEG}/{_SEG}/collaborators/{_SEG}/permission"), ForgeEmulator._permission),
    ("POST", re.compile(rf"/repos/{_SEG}/{_SEG}/statuses/{_SEG}"), ForgeEmulator._create_status),
    ("PATCH", re.compile(rf"/repos/{_SEG}/{_SEG}/issues/comments/([0-9]+)"), ForgeEmulator._edit_comment),
    ("GET", re.compile(rf"/repos/{_SEG}/{_SEG}/issues/([0-9]+)/comments"), ForgeEmulator._list_comments),
    ("POST", re.compile(rf"/repos/{_SEG}/{_SEG}/issues/([0-9]+)/comments"), ForgeEmulator._create_comment),
]
# The project is one path segment: its id, or its full path URL-encoded (group%2Fsub%2Fname).
_GITLAB_ROUTES = [
    ("GET", re.compile(rf"/projects/{_SEG}/merge_requests/([0-9]+)"), ForgeEmulator._gl_get_mr),
    ("GET", re.compile(rf"/projects/{_SEG}/members/all/([0-9]+)"), ForgeEmulator._gl_member),
    ("POST", re.compile(rf"/projects/{_SEG}/statuses/{_SEG}"), ForgeEmulator._gl_status),
    ("GET", re.compile(rf"/projects/{_SEG}/merge_requests/([0-9]+)/notes"), ForgeEmulator._gl_list_notes),
    ("POST", re.compile(rf"/projects/{_SEG}/merge_requests/([0-9]+)/notes"), ForgeEmulator._gl_create_note),
    ("PUT", re.compile(rf"/projects/{_SEG}/merge_requests/([0-9]+)/notes/([0-9]+)"), ForgeEmulator._gl_edit_note),
]


def _handler_for(emulator: ForgeEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # answers go out at once on kept-alive connections

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            answer = emulator.handle(self.command, self.path, dict(self.headers.items()), raw)
            if answer.delay:
                time.sleep(answer.delay)
            data = json.dumps(answer.payload).encode() if answer.payload is not None else b""
            self.send_response(answer.status)
            for key, value in answer.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    return Handler
