"""Which pull requests run with secrets: the pure decision."""

from __future__ import annotations

import pytest

from tasks.pr_trust import HOLD, RUN, RUN_WITHOUT_SECRETS, decide_trust


@pytest.mark.parametrize("fork, can_write, labels, policy, expected", [
    (False, True, (), "hold", RUN),
    (True, True, (), "hold", HOLD),  # a maintainer's own fork: still code from outside the repository
    (False, False, (), "hold", HOLD),
    (True, False, (), "run-without-secrets", RUN_WITHOUT_SECRETS),
    (True, False, ("safe-to-test",), "hold", RUN),
    (True, False, ("safe-to-test-please",), "hold", HOLD),
])
def test_forks_and_authors_without_write_access_are_held_until_the_label(fork, can_write, labels, policy, expected):
    decision = decide_trust(fork, "mallory", can_write, labels, policy, "safe-to-test")
    assert decision.action == expected
    if expected == HOLD:
        assert decision.held and "safe-to-test" in decision.reason
        assert ("fork" in decision.reason) == fork and ("mallory" in decision.reason) == (not can_write)


def test_a_pipeline_that_cannot_run_without_secrets_holds_instead():
    decision = decide_trust(True, "mallory", False, (), "run-without-secrets", "ok", can_run_untrusted=False)
    assert decision.held
