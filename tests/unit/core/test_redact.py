"""Redaction: registered values, lines of multi-line secrets, log records, opsflow exceptions."""

from __future__ import annotations

import logging

import pytest

from opsflow.core import redact as r
from opsflow.core.errors import BuildFailed, CommandFailed


@pytest.fixture(autouse=True)
def _clean_registry():
    r.forget_all()
    yield
    r.forget_all()


def test_each_line_of_a_multi_line_secret_is_masked_on_its_own():
    pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----"
    out = r.redact("line 2 is MIIEvQIBADANBgkqhkiG9w0BAQEFAASC here", [pem])
    assert "MIIEvQ" not in out and out == "line 2 is *** here"


def test_registered_values_are_masked_everywhere_and_short_ones_are_ignored():
    r.register(["tok-1f2e3d4c", "abc", None])
    assert r.redact("token tok-1f2e3d4c abc") == "token *** abc"
    assert r.redact_data({"rows": [{"message": "tok-1f2e3d4c"}]}) == {"rows": [{"message": "***"}]}


def test_an_opsflow_error_made_after_registration_carries_no_secret():
    r.register(["s3cr3t-value-99"])
    assert "s3cr3t" not in str(BuildFailed("build printed s3cr3t-value-99"))
    failed = CommandFailed(["npm", "test"], 1, "oops s3cr3t-value-99")
    assert "s3cr3t" not in str(failed) and "***" in str(failed)


def test_the_log_filter_masks_messages_arguments_and_tracebacks():
    r.register(["hunter2-secret"])
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "saw %s", ("hunter2-secret",), None)
    try:
        raise ValueError("hunter2-secret in a traceback")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert r.RedactingFilter().filter(record)
    assert record.getMessage() == "saw ***"
    assert "hunter2" not in record.exc_text and record.exc_info is None
