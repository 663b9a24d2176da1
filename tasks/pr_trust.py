"""Whether a pull request's code may run with the build server's secrets: asked of the forge, decided here.

A pull request is trusted when it comes from the repository itself (not a fork) and the forge lists its
author as a collaborator/member with write access, or when a maintainer added the application's
``trusted_label``. Anything else is held, or built and tested without secrets and without storing
anything, as the Application block's ``untrusted_prs`` says.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger, task

from blocks import Application, GitForge
from blocks.application import UntrustedPullRequests

RUN, HOLD, RUN_WITHOUT_SECRETS = "run", "hold", "run-without-secrets"


@dataclass(frozen=True)
class TrustDecision:
    """What a pull request run does, and why (``reason`` is shown in the status, the comment and the log)."""

    action: str  # run, hold, run-without-secrets
    reason: str
    label: str = ""

    @property
    def trusted(self) -> bool:
        return self.action == RUN

    @property
    def held(self) -> bool:
        return self.action == HOLD


def decide_trust(from_fork: bool, author: str, author_can_write: bool, labels: tuple[str, ...],
                 policy: UntrustedPullRequests | str, label: str, can_run_untrusted: bool = True) -> TrustDecision:
    """Pure: the decision for a pull request as the forge describes it."""
    if label in labels:
        return TrustDecision(RUN, f"a maintainer added the label {label!r}", label)
    why = []
    if from_fork:
        why.append("it comes from a fork")
    if not author_can_write:
        why.append(f"its author {author or '(unknown)'} is not a collaborator with write access")
    if not why:
        return TrustDecision(RUN, f"its author {author} may write to the repository", label)
    reason = " and ".join(why)
    if UntrustedPullRequests(policy) == UntrustedPullRequests.run_without_secrets and can_run_untrusted:
        return TrustDecision(RUN_WITHOUT_SECRETS, f"{reason}: built and tested without secrets, nothing stored", label)
    return TrustDecision(HOLD, f"{reason}: held until a maintainer adds the label {label!r}", label)


@task(name="check-pull-request-trust", task_run_name="check-trust-#{pr}", retries=2, retry_delay_seconds=5)
def check_pull_request_trust(forge: GitForge, application: Application, pr: int,
                             can_run_untrusted: bool = True) -> TrustDecision:
    """Ask the forge who opened pull request ``pr`` from where, and decide (see the module docstring).

    Args:
        forge: the GitForge block the application's repository is on.
        application: the application (its ``forge_repo``, ``untrusted_prs`` and ``trusted_label``).
        pr: the pull request number (GitLab: the merge request iid).
        can_run_untrusted: whether this pipeline can run without secrets at all (MLOps cannot: it is held).
    Returns:
        The decision and its reason.
    Raises:
        RemoteError: the forge could not be asked (nothing runs: an unknown author is not trusted).
    """
    with forge.get_client() as client:
        info = client.pull_request(application.forge_repo, pr)
    decision = decide_trust(info.from_fork, info.author, info.author_can_write, info.labels,
                            application.untrusted_prs, application.trusted_label, can_run_untrusted)
    get_run_logger().info("pull request #%d by %s: %s (%s)", pr, info.author or "?", decision.action, decision.reason)
    return decision
