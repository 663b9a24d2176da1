import os
import stat
from pathlib import Path

import pytest
from prefect.blocks.system import Secret

from blocks import EnvFile
from opsflow.core.errors import InvalidInput
from tasks.app_tests import parse_junit
from tasks.env_files import fetch_env_files, redaction_list
from tasks.git import Checkout

ENV_TEXT = "API_TOKEN=sup3r-s3cret-token\nGREETING=hello\n"


def test_env_files_are_written_0600_and_never_returned(tmp_path):
    checkout = Checkout(path=tmp_path, sha="a" * 40, repository="file:///x")
    written = fetch_env_files.fn(checkout, [EnvFile(secret_block="shop-env", path="backend/.env")],
                                 {"shop-env": Secret(value=ENV_TEXT)})
    target = tmp_path / "backend" / ".env"
    assert target.read_text() == ENV_TEXT
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert "sup3r" not in repr(written)
    assert "sup3r-s3cret-token" in redaction_list(checkout, written)


def test_env_files_missing_secret_or_escaping_path(tmp_path):
    checkout = Checkout(path=tmp_path, sha="a" * 40, repository="file:///x")
    with pytest.raises(InvalidInput, match="no Secret block 'other'"):
        fetch_env_files.fn(checkout, [EnvFile(secret_block="other", path=".env")], {})
    link = tmp_path / "out"
    link.symlink_to("/tmp")
    with pytest.raises(InvalidInput, match="escapes the checkout"):
        fetch_env_files.fn(checkout, [EnvFile(secret_block="e", path="out/x.env")], {"e": Secret(value="A=1")})


def test_parse_junit_counts_outcomes_and_names_failures(tmp_path: Path):
    report = tmp_path / "junit.xml"
    report.write_text("""<?xml version="1.0"?>
<testsuites><testsuite name="api">
  <testcase classname="api" name="greets" time="0.01"/>
  <testcase classname="api" name="health" time="0.02"><failure message="expected 200, got 500">trace</failure>
  </testcase>
  <testsuite name="nested"><testcase name="skips" time="0"><skipped/></testcase></testsuite>
  <testcase classname="api" name="boom" time="0.1"><error message="TypeError: x"/></testcase>
</testsuite></testsuites>""")
    cases = parse_junit(report)
    outcomes = {c.name: c.outcome for c in cases}
    assert outcomes == {"greets": "passed", "health": "failed", "skips": "skipped", "boom": "error"}
    assert next(c for c in cases if c.name == "health").message == "expected 200, got 500"
