"""Reporting to the forge: commit statuses and one updatable comment per pull request and key.

Both are retried within a deadline when the forge is unreachable or busy (the client retries each
call a few times; the task is retried after 2, 5, 10, 20, 30 and 60 s: about 2.5 minutes in all),
never when the forge refused the request for its content.

A PR comment records the head commit and the run's start time it reports on
(``<!-- opsflow-head: <sha> <time> -->``): a run for another head that started earlier than the one
the comment shows leaves it alone, so a slow run of an older head never overwrites a newer head's report.
"""

from __future__ import annotations

import re
from datetime import datetime

from prefect import get_run_logger, task

from blocks import GitForge
from blocks.fields import MAX_DESCRIPTION, check_body
from opsflow.core.errors import InvalidInput, TransientError
from opsflow.forge.api import CommentRef, CommitState, check_state

MARKER_PREFIX = "<!-- opsflow:"
_KEY_RE = re.compile(r"^[a-z0-9._/-]{1,100}$")
_HEAD_RE = re.compile(r"<!-- opsflow-head: ([0-9a-f]{40,64}) (\S*) -->")
RETRY_DELAYS_S = [2, 5, 10, 20, 30, 60]


def _forge_unreachable(task, task_run, state) -> bool:
    """Retry a report the forge did not answer (network, 429, 5xx), not one it refused."""
    return isinstance(state.result(raise_on_failure=False), TransientError)


def head_marker(head: str, created: str) -> str:
    """The hidden line recording which head commit (and run start time) a comment reports on."""
    return f"<!-- opsflow-head: {head} {created} -->"


def read_head(body: str) -> tuple[str, datetime | None] | None:
    """``(head sha, run start time)`` a comment records, or None."""
    match = _HEAD_RE.search(body or "")
    if not match:
        return None
    try:
        when = datetime.fromisoformat(match.group(2)) if match.group(2) else None
    except ValueError:
        when = None
    return match.group(1), when


def superseded(existing_body: str, head: str | None, created: str | None) -> str | None:
    """The newer head an existing comment reports on, when it must not be overwritten by ``head``; else None."""
    if not head or not created:
        return None
    recorded = read_head(existing_body)
    if recorded is None or recorded[0] == head or recorded[1] is None:
        return None
    try:
        ours = datetime.fromisoformat(created)
    except ValueError:
        return None
    return recorded[0] if recorded[1] > ours else None


def marker(key: str) -> str:
    """The hidden HTML comment that identifies opsflow's comment for ``key``: ``<!-- opsflow:{key} -->``.

    Raises:
        InvalidInput: ``key`` is not 1-100 of lowercase letters, digits, ``.``, ``_``, ``/``, ``-``.
    """
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise InvalidInput(f"{key!r} is not a comment key: use 1-100 lowercase letters, digits, '.', '_', '/', '-'")
    return f"{MARKER_PREFIX}{key} -->"


def _shorten(text: str, limit: int = MAX_DESCRIPTION) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@task(name="report-status", task_run_name="report-status-{context}", retries=len(RETRY_DELAYS_S),
      retry_delay_seconds=RETRY_DELAYS_S, retry_condition_fn=_forge_unreachable)
def report_status(
    forge: GitForge,
    repo: str,
    sha: str,
    state: CommitState | str,
    context: str,
    description: str,
    target_url: str | None = None,
) -> None:
    """Set the commit status ``context`` on ``sha`` in ``repo`` to ``state``.

    Args:
        forge: the forge to report to.
        repo: ``owner/name`` on the forge (GitLab: ``group[/subgroup]/name``).
        sha: the full commit SHA (40 or 64 hex characters).
        state: pending, success, failure or error (GitLab shows failure and error as failed).
        context: the status's name, e.g. ``opsflow/gitops-pr``; a later status with the same context replaces it.
        description: one line of text; whitespace is collapsed and it is cut to 140 characters.
        target_url: the link the status points to (the flow run), if any.

    Raises:
        InvalidInput: a bad repo, SHA, state, context or URL, before any request.
        RemoteError: the forge refused the status or stayed unreachable after retries.
    """
    state = check_state(state)
    with forge.get_client() as client:
        client.set_status(repo, sha, state, context, _shorten(description), target_url)
    get_run_logger().info("status %s = %s on %s@%s", context, state.value, repo, sha[:12])


@task(name="upsert-pr-comment", task_run_name="upsert-pr-comment-{key}", retries=len(RETRY_DELAYS_S),
      retry_delay_seconds=RETRY_DELAYS_S, retry_condition_fn=_forge_unreachable)
def upsert_pr_comment(forge: GitForge, repo: str, pr: int, key: str, body: str, head: str | None = None,
                      created: str | None = None) -> CommentRef | None:
    """Keep exactly one comment per pull request and ``key``: update it in place, or create it.

    The comment is found by the hidden marker ``<!-- opsflow:{key} -->`` on its first line,
    looking through every page of the PR's comments. If several carry the marker, the oldest
    is updated. An unchanged body is not written again.

    Args:
        forge: the forge to comment on.
        repo: ``owner/name`` on the forge (GitLab: ``group[/subgroup]/name``).
        pr: the pull request number (GitLab: the merge request iid).
        key: what the comment is about, e.g. ``gitops-pr-shop``; see :func:`marker`.
        body: the markdown to show.
        head: the commit the report is about (recorded in the comment).
        created: when the reporting run started (ISO 8601): a comment showing another head of a run that
            started later is left as it is.

    Returns:
        The comment's id and URL, and whether it was created (``False``: updated or unchanged); None
        when a newer head's report is there.

    Raises:
        InvalidInput: a bad repo, PR number, key or body, before any request.
        RemoteError: the forge refused the request or stayed unreachable after retries.
    """
    tag = marker(key)
    check_body(body)
    lines = [tag] + ([head_marker(head, created or "")] if head else [])
    text = check_body(body if body.startswith(tag) else "\n".join([*lines, body]))
    logger = get_run_logger()
    with forge.get_client() as client:
        ours = [c for c in client.list_comments(repo, pr) if tag in c.body]
        if not ours:
            made = client.create_comment(repo, pr, text)
            logger.info("commented on %s#%d (%s): %s", repo, pr, key, made.url)
            return CommentRef(id=made.id, url=made.url, created=True)
        oldest = min(ours, key=lambda c: c.id)
        newer = superseded(oldest.body, head, created)
        if newer:
            logger.info("comment %d on %s#%d reports on %s, a newer head than %s: left as it is", oldest.id, repo,
                        pr, newer[:12], (head or "")[:12])
            return None
        if len(ours) > 1:
            logger.warning("%d comments on %s#%d carry the %s marker; updating the oldest (%d)",
                           len(ours), repo, pr, key, oldest.id)
        if oldest.body.replace("\r\n", "\n") == text.replace("\r\n", "\n"):
            return CommentRef(id=oldest.id, url=oldest.url, created=False)
        updated = client.update_comment(repo, pr, oldest.id, text)
        logger.info("updated comment %d on %s#%d (%s)", updated.id, repo, pr, key)
        return CommentRef(id=updated.id, url=updated.url or oldest.url, created=False)
