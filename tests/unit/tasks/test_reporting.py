"""report_status and upsert_pr_comment over real HTTP against the local forge emulator, for all three forges."""

from __future__ import annotations

import socket

import pytest

from blocks import GitForge
from opsflow.core.errors import InvalidInput, RemoteError
from opsflow.forge import CommitState, GitHubClient
from opsflow.forge import api as forge_api
from tasks.reporting import marker, report_status, upsert_pr_comment

pytestmark = pytest.mark.forge

KINDS = ["github", "gitea", "gitlab"]
REPO = "acme/shop"
SHA = "3f9c" * 10
RUN_URL = "http://127.0.0.1:4200/runs/flow-run/1234"


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    """Same number of attempts, shorter waits."""
    monkeypatch.setattr(forge_api, "BACKOFF_S", 0.01)
    monkeypatch.setattr(forge_api, "MAX_DELAY_S", 0.05)


def _requests(forge, method: str, path_contains: str) -> list:
    return [r for r in forge.requests if r.method == method and path_contains in r.target]


# -- statuses --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("state", "github_gitea", "gitlab"), [
    ("pending", "pending", "pending"), ("success", "success", "success"),
    ("failure", "failure", "failed"), (CommitState.error, "error", "failed"),
])
def test_status_lands_with_the_forge_state_context_and_link(forge, kind, state, github_gitea, gitlab):
    report_status.fn(forge.block(kind), REPO, SHA, state, "opsflow/gitops-pr", "all components passed", RUN_URL)

    [status] = forge.statuses(kind, REPO, SHA)
    assert status["state"] == (gitlab if kind == "gitlab" else github_gitea)
    assert status["context"] == "opsflow/gitops-pr"
    assert status["target_url"] == RUN_URL
    assert status["description"] == "all components passed"


@pytest.mark.parametrize("kind", KINDS)
def test_long_description_is_cut_to_140_characters(forge, kind):
    report_status.fn(forge.block(kind), REPO, SHA, "failure", "ci", "failed: " + ", ".join(f"c{i}" for i in range(80)))

    [status] = forge.statuses(kind, REPO, SHA)
    assert len(status["description"]) == 140 and status["description"].endswith("…")


@pytest.mark.parametrize("kind", KINDS)
def test_pending_twice_then_success(forge, kind):
    """GitLab refuses pending → pending with 400 ("Cannot transition status"); that is not an error."""
    block = forge.block(kind)
    report_status.fn(block, REPO, SHA, "pending", "ci", "building")
    report_status.fn(block, REPO, SHA, "pending", "ci", "building again")
    report_status.fn(block, REPO, SHA, "success", "ci", "done")
    assert forge.statuses(kind, REPO, SHA)[-1]["state"] == "success"


def test_gitlab_project_path_is_url_encoded_with_nested_groups(forge):
    report_status.fn(forge.block("gitlab"), "acme/platform/shop", SHA, "success", "ci", "ok")
    assert forge.statuses("gitlab", "acme/platform/shop", SHA)[0]["state"] == "success"
    [request] = forge.requests
    assert request.path == f"/gitlab/api/v4/projects/acme%2Fplatform%2Fshop/statuses/{SHA}"


def test_nested_groups_are_refused_for_github_and_gitea(forge):
    for kind in ("github", "gitea"):
        with pytest.raises(InvalidInput, match="owner/name"):
            report_status.fn(forge.block(kind), "acme/platform/shop", SHA, "success", "ci", "ok")
    assert forge.requests == []


# -- comments --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_upsert_keeps_one_comment_per_key(forge, kind):
    block = forge.block(kind)

    first = upsert_pr_comment.fn(block, REPO, 7, "gitops-pr-shop", "build **running**")
    second = upsert_pr_comment.fn(block, REPO, 7, "gitops-pr-shop", "build **passed**")

    assert first.created and not second.created
    assert second.id == first.id
    [comment] = forge.comments(kind, REPO, 7)
    assert comment["id"] == first.id
    assert comment["body"] == f"{marker('gitops-pr-shop')}\nbuild **passed**"
    assert comment["body"].splitlines()[0] == "<!-- opsflow:gitops-pr-shop -->"
    assert first.url and f"{comment['id']}" in first.url

    other = upsert_pr_comment.fn(block, REPO, 7, "gitops-merge-shop", "image pushed")
    assert other.created and other.id != first.id
    assert len(forge.comments(kind, REPO, 7)) == 2
    assert forge.comments(kind, REPO, 8) == []


@pytest.mark.parametrize("kind", KINDS)
def test_unchanged_body_is_not_written_again(forge, kind):
    block = forge.block(kind)
    upsert_pr_comment.fn(block, REPO, 3, "k", "same")
    ref = upsert_pr_comment.fn(block, REPO, 3, "k", "same")
    assert not ref.created
    assert not [r for r in forge.requests if r.method in ("PATCH", "PUT")]


@pytest.mark.parametrize("kind", KINDS)
def test_marker_comment_on_a_later_page_is_found_and_updated(forge, kind):
    """300 comments: ours sits at position 151, on page 2 whichever way the forge sorts (100 a page)."""
    block = forge.block(kind)
    for i in range(150):
        forge.add_comment(kind, REPO, 12, f"review comment {i}")
    created = upsert_pr_comment.fn(block, REPO, 12, "gitops-pr-shop", "v1")
    for i in range(149):
        forge.add_comment(kind, REPO, 12, f"later comment {i}")

    updated = upsert_pr_comment.fn(block, REPO, 12, "gitops-pr-shop", "v2")

    assert created.created and not updated.created and updated.id == created.id
    comments = forge.comments(kind, REPO, 12)
    assert len(comments) == 300
    ours = [c for c in comments if marker("gitops-pr-shop") in c["body"]]
    assert [c["id"] for c in ours] == [created.id] and ours[0]["body"].endswith("\nv2")
    if kind != "gitea":  # Gitea sends every comment at once
        pages = {r.query["page"][0] for r in _requests(forge, "GET", "/12/")}
        assert {"1", "2", "3"} <= pages


@pytest.mark.parametrize("kind", KINDS)
def test_the_oldest_of_several_marker_comments_is_updated(forge, kind):
    old = forge.add_comment(kind, REPO, 5, f"{marker('k')}\nold")
    new = forge.add_comment(kind, REPO, 5, f"{marker('k')}\nnewer copy")

    ref = upsert_pr_comment.fn(forge.block(kind), REPO, 5, "k", "fresh")

    assert ref.id == old and not ref.created
    bodies = {c["id"]: c["body"] for c in forge.comments(kind, REPO, 5)}
    assert bodies == {old: f"{marker('k')}\nfresh", new: f"{marker('k')}\nnewer copy"}


def test_markers_of_other_keys_do_not_match(forge):
    forge.add_comment("github", REPO, 5, f"{marker('gitops-pr-shop2')}\nother app")
    ref = upsert_pr_comment.fn(forge.block("github"), REPO, 5, "gitops-pr-shop", "mine")
    assert ref.created and len(forge.comments("github", REPO, 5)) == 2


def test_gitlab_system_notes_are_not_comments(forge):
    forge.add_comment("gitlab", REPO, 4, "added 1 commit", system=True)
    forge.add_comment("gitlab", REPO, 4, "looks good")
    with forge.block("gitlab").get_client() as client:
        assert [c.body for c in client.list_comments(REPO, 4)] == ["looks good"]


# -- secrets and headers ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_token_only_ever_travels_in_the_auth_header(forge, kind):
    block = forge.block(kind)
    for i in range(120):
        forge.add_comment(kind, REPO, 9, f"c{i}")
    report_status.fn(block, REPO, SHA, "success", "ci", "ok", RUN_URL)
    upsert_pr_comment.fn(block, REPO, 9, "k", "one")
    upsert_pr_comment.fn(block, REPO, 9, "k", "two")

    assert len(forge.requests) >= 5
    expected = {
        "github": {"Authorization": f"Bearer {forge.token}", "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": "2022-11-28"},
        "gitea": {"Authorization": f"token {forge.token}"},
        "gitlab": {"PRIVATE-TOKEN": forge.token},
    }[kind]
    for request in forge.requests:
        assert forge.token not in request.target
        assert all(forge.token not in v for values in request.query.values() for v in values)
        assert forge.token not in str(request.body)
        assert {k: request.headers.get(k) for k in expected} == expected


# -- failures and retries --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_two_bad_gateways_then_success(forge, kind):
    forge.fail_next(2, 502, "/statuses/")
    forge.fail_next(2, 502, "/12/", method="POST")

    report_status.fn(forge.block(kind), REPO, SHA, "success", "ci", "ok")
    ref = upsert_pr_comment.fn(forge.block(kind), REPO, 12, "k", "body")

    assert len(_requests(forge, "POST", "/statuses/")) == 3
    assert forge.statuses(kind, REPO, SHA)[0]["state"] == "success"
    assert ref.created and len(forge.comments(kind, REPO, 12)) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_persistent_503_is_a_remote_error_naming_the_endpoint(forge, kind):
    forge.fail_next(100, 503, "/statuses/")

    with pytest.raises(RemoteError) as err:
        report_status.fn(forge.block(kind), REPO, SHA, "success", "ci", "ok")

    assert len(forge.requests) == forge_api.ATTEMPTS == 4
    message = str(err.value)
    assert f"POST {forge.url_for(kind)}/" in message and f"/statuses/{SHA}" in message
    assert "503" in message and "after 4 attempts" in message and "retry later" in message
    assert forge.token not in message


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_token_fails_at_once_and_says_to_check_the_token(forge, kind):
    wrong = "wrong-token-0123456789"
    with pytest.raises(RemoteError, match="401") as err:
        report_status.fn(forge.block(kind, token=wrong), REPO, SHA, "success", "ci", "ok")

    assert len(forge.requests) == 1
    assert "check the token" in str(err.value)
    assert wrong not in str(err.value)


@pytest.mark.parametrize("kind", KINDS)
def test_not_found_is_not_retried_and_hints_at_scopes(forge, kind):
    forge.fail_next(1, 404, "/comments" if kind != "gitlab" else "/notes")
    with pytest.raises(RemoteError, match="scopes"):
        upsert_pr_comment.fn(forge.block(kind), REPO, 2, "k", "body")
    assert len(forge.requests) == 1


@pytest.mark.parametrize(("retry_after", "slept"), [("2", 2.0), ("120", 3.0)])
def test_retry_after_is_honoured_up_to_the_cap(forge, monkeypatch, retry_after, slept):
    waits: list[float] = []
    monkeypatch.setattr(forge_api, "_sleep", waits.append)
    monkeypatch.setattr(forge_api, "MAX_DELAY_S", 3.0)
    forge.fail_next(1, 429, "/statuses/", retry_after=retry_after)

    report_status.fn(forge.block("github"), REPO, SHA, "success", "ci", "ok")

    assert waits == [slept]
    assert len(forge.statuses("github", REPO, SHA)) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_lost_answer_to_a_new_comment_does_not_duplicate_it(forge, kind):
    """The forge made the comment but the answer was a 502: the retry finds it instead of posting again."""
    forge.fail_next(1, 502, "/4/", method="POST", applied=True)
    ref = upsert_pr_comment.fn(forge.block(kind), REPO, 4, "k", "body")
    assert ref.created
    assert [c["id"] for c in forge.comments(kind, REPO, 4)] == [ref.id]
    assert len(_requests(forge, "POST", "/4/")) == 1


def test_a_timed_out_new_comment_is_not_posted_twice(forge):
    forge.stall_next(1, 1.0, "/4/comments", method="POST")
    ref = upsert_pr_comment.fn(forge.block("gitea", timeout=0.3), REPO, 4, "k", "body")
    assert [c["id"] for c in forge.comments("gitea", REPO, 4)] == [ref.id]


def test_an_unreachable_forge_is_a_remote_error_after_the_attempts():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    block = GitForge(kind="github", api_url=f"http://127.0.0.1:{port}", token="t0ken-abcdef", timeout=1)
    with pytest.raises(RemoteError, match=f"POST http://127.0.0.1:{port}/repos/acme/shop/statuses/.*after 4 attempts"):
        report_status.fn(block, REPO, SHA, "success", "ci", "ok")


def test_pagination_links_outside_the_api_are_refused():
    with GitHubClient("https://api.github.com", "t0ken-abcdef") as client:
        assert client._next_url("https://api.github.com/repos/a/b/issues/1/comments?page=2")
        with pytest.raises(RemoteError, match="outside"):
            client._next_url("https://evil.example/repos/a/b/issues/1/comments?page=2")


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("repo", "sha", "state", "context"), [
    ("owner/repo; rm -rf /", SHA, "success", "ci"),
    ("acme/..", SHA, "success", "ci"),
    ("shop", SHA, "success", "ci"),
    (REPO, "main", "success", "ci"),
    (REPO, "a" * 39, "success", "ci"),
    (REPO, SHA, "running", "ci"),
    (REPO, SHA, "success", ""),
    (REPO, SHA, "success", "x" * 256),
    (REPO, SHA, "success", "ci\nX-Injected: 1"),
])
def test_bad_status_input_is_refused_before_any_request(forge, kind, repo, sha, state, context):
    with pytest.raises(InvalidInput):
        report_status.fn(forge.block(kind), repo, sha, state, context, "desc")
    assert forge.requests == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("repo", "pr", "key", "body"), [
    ("owner/repo; rm -rf /", 1, "k", "b"),
    (REPO, 0, "k", "b"),
    (REPO, -3, "k", "b"),
    (REPO, True, "k", "b"),
    (REPO, "1", "k", "b"),
    (REPO, 1, "Bad Key", "b"),
    (REPO, 1, "k -->", "b"),
    (REPO, 1, "k", "   "),
    (REPO, 1, "k", "x" * 70000),
])
def test_bad_comment_input_is_refused_before_any_request(forge, kind, repo, pr, key, body):
    with pytest.raises(InvalidInput):
        upsert_pr_comment.fn(forge.block(kind), repo, pr, key, body)
    assert forge.requests == []


def test_marker_format():
    assert marker("gitops-pr-shop") == "<!-- opsflow:gitops-pr-shop -->"
    assert marker("a/b.c_d-1") == "<!-- opsflow:a/b.c_d-1 -->"
    for bad in ("", "UPPER", "with space", "x" * 101, "a>b"):
        with pytest.raises(InvalidInput):
            marker(bad)


def test_emulator_rejects_what_the_real_apis_reject(forge):
    """The emulator is only worth testing against if it refuses bad states and tokens the way the forges do."""
    import httpx

    base = {k: forge.url_for(k) for k in KINDS}
    auth = {"github": {"Authorization": f"Bearer {forge.token}"}, "gitea": {"Authorization": f"token {forge.token}"},
            "gitlab": {"PRIVATE-TOKEN": forge.token}}
    paths = {"github": f"/repos/{REPO}/statuses/{SHA}", "gitea": f"/repos/{REPO}/statuses/{SHA}",
             "gitlab": f"/projects/acme%2Fshop/statuses/{SHA}"}
    with httpx.Client() as http:
        for kind, invalid, code in [("github", "warning", 422), ("gitea", "running", 400), ("gitlab", "failure", 400)]:
            resp = http.post(base[kind] + paths[kind], json={"state": invalid, "context": "c"}, headers=auth[kind])
            assert resp.status_code == code, kind
            assert http.post(base[kind] + paths[kind], json={"state": "pending"}).status_code == 401
        resp = http.post(base["gitlab"] + f"/projects/acme/shop/statuses/{SHA}", json={"state": "pending"},
                         headers=auth["gitlab"])
        assert resp.status_code == 404  # the project path must be URL-encoded


# -- two runs of one pull request (issue 21) ---------------------------------------------------

OLD_HEAD, NEW_HEAD = "01d0" * 10, "7e57" * 10


def test_a_run_for_an_older_head_never_overwrites_the_newer_heads_report(forge):
    block = forge.block("github")
    newer = upsert_pr_comment.fn(block, REPO, 9, "gitops-pr-shop", "new head: passed", head=NEW_HEAD,
                                 created="2026-05-01T10:00:05+00:00")
    late = upsert_pr_comment.fn(block, REPO, 9, "gitops-pr-shop", "old head: failed", head=OLD_HEAD,
                                created="2026-05-01T10:00:00+00:00")
    assert newer.created and late is None
    [comment] = forge.comments("github", REPO, 9)
    assert "new head: passed" in comment["body"] and f"<!-- opsflow-head: {NEW_HEAD} " in comment["body"]
    # A run of the same head, or of a head pushed later, updates it.
    again = upsert_pr_comment.fn(block, REPO, 9, "gitops-pr-shop", "newest: passed", head="9" * 40,
                                 created="2026-05-01T10:01:00+00:00")
    assert again is not None and "newest" in forge.comments("github", REPO, 9)[0]["body"]


def test_superseded_reads_only_the_recorded_head():
    from tasks.reporting import head_marker, superseded

    body = f"{marker('k')}\n{head_marker(NEW_HEAD, '2026-05-01T10:00:05+00:00')}\nreport"
    assert superseded(body, OLD_HEAD, "2026-05-01T10:00:00+00:00") == NEW_HEAD
    assert superseded(body, NEW_HEAD, "2026-05-01T09:00:00+00:00") is None
    assert superseded(body, OLD_HEAD, "2026-05-01T11:00:00+00:00") is None
    assert superseded("no marker", OLD_HEAD, "2026-05-01T11:00:00+00:00") is None


def test_an_unreachable_forge_is_retried_by_the_task_a_refusal_is_not():
    from opsflow.core.errors import RemoteUnavailable
    from tasks.reporting import _forge_unreachable

    class State:
        def __init__(self, exc):
            self.exc = exc

        def result(self, raise_on_failure=False):
            return self.exc

    assert _forge_unreachable(None, None, State(RemoteUnavailable("down")))
    assert not _forge_unreachable(None, None, State(RemoteError("401 bad credentials")))
