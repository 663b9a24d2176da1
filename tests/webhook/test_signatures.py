"""Delivery signatures of the three forges (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opsflow.webhook.signatures import SIGNATURE_HEADERS, sign, verify
from tests.webhook.deliveries import KINDS, lower, pr_payload, signed

SECRET = "s3cret-hook"


@pytest.mark.parametrize("kind", KINDS)
def test_a_signed_delivery_verifies_and_any_change_does_not(kind):
    headers, body = signed(kind, "pull_request", pr_payload(kind, "opened", 1, "a" * 40, "o/r"), SECRET)
    assert verify(kind, lower(headers), body, SECRET)
    if kind != "gitlab":  # GitLab sends the secret itself and signs nothing
        assert not verify(kind, lower(headers), body + b" ", SECRET)
    assert not verify(kind, lower(headers), body, "other")
    assert not verify(kind, {}, body, SECRET)
    assert not verify(kind, lower(headers), body, "")  # no secret configured: nothing verifies
    assert not verify("bitbucket", lower(headers), body, SECRET)


def test_the_documented_header_formats():
    body = b'{"zen": "Keep it logically awesome."}'
    assert verify("github", {"x-hub-signature-256": "sha256=" + sign("k", body)}, body, "k")
    assert verify("github", {"x-hub-signature-256": "sha256=" + sign("k", body).upper()}, body, "k")
    assert not verify("github", {"x-hub-signature-256": sign("k", body)}, body, "k")  # the prefix is required
    assert not verify("github", {"x-hub-signature": "sha1=" + sign("k", body)}, body, "k")  # sha1 is not enough
    assert verify("gitea", {"x-gitea-signature": sign("k", body)}, body, "k")
    assert verify("gitlab", {"x-gitlab-token": "k"}, body, "k")
    assert not verify("gitlab", {"x-gitlab-token": "k "}, body, "k")


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(KINDS), text=st.text(max_size=80), valid=st.booleans(), body=st.binary(max_size=200),
       secret=st.text(min_size=1, max_size=30))
def test_any_header_value_verifies_exactly_when_it_is_the_right_one(kind, text, valid, body, secret):
    """No value raises (compare_digest refuses non-ASCII str) and non-ASCII GitLab tokens work."""
    if valid:
        text = {"github": "sha256=" + sign(secret, body), "gitea": sign(secret, body), "gitlab": secret}[kind]
    header = text.encode().decode("latin-1")  # what http.server hands over for the bytes sent
    expected = {"github": header.startswith("sha256=") and header[7:].lower() == sign(secret, body),
                "gitea": header.lower() == sign(secret, body), "gitlab": text == secret}[kind]
    assert verify(kind, {SIGNATURE_HEADERS[kind]: header}, body, secret) == expected
