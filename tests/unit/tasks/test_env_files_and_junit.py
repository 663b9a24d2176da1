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


@pytest.fixture(autouse=True)
def _forget_registered_secrets():
    """Env file values are registered for this process's redaction; other tests must not inherit them."""
    from opsflow.core.redact import forget_all

    yield
    forget_all()


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


# --- what a build could print of an env file, read the way its tools read it (issue 21) ---------------

LEAKY_ENV = '''# build secrets
export BUILD_TOKEN=bt-9f8e7d6c5b4a # the token the build needs
PUBLIC_API_NAME=shop-it
CERT="-----BEGIN CERT-----
inner-line-of-the-cert-77aa
-----END CERT-----"
DOTENV_MULTI="first-dotenv-line\\nsecond-dotenv-line"
APP_ALIAS=shop-it
'''


def test_secret_values_cover_sh_docker_and_dotenv_readings_but_not_public_ones():
    from tasks.env_files import secret_values

    values = secret_values(LEAKY_ENV, public_values=["shop-it"])
    assert "bt-9f8e7d6c5b4a" in values  # as `sh` sources it: the trailing comment is not the value
    assert "bt-9f8e7d6c5b4a # the token the build needs" in values  # as docker --env-file reads it
    assert "inner-line-of-the-cert-77aa" in values  # the inner line of a multi-line value
    assert "second-dotenv-line" in values  # dotenv turns \n in double quotes into a line break
    assert "shop-it" not in values  # a PUBLIC_ key's value, and the application's name: never masked


def test_printing_a_sourced_env_file_leaks_nothing(tmp_path):
    from opsflow.core.proc import run
    from tasks.env_files import secret_values

    env = tmp_path / ".env"
    env.write_text(LEAKY_ENV)
    secrets = secret_values(LEAKY_ENV, public_values=["shop-it"])
    out = run(["sh", "-c", f'set -a; . {env}; echo "token=$BUILD_TOKEN"; printf "%s\\n" "$CERT"; '
                           'echo "name=$PUBLIC_API_NAME"'], secrets=secrets)
    assert "bt-9f8e" not in out and "inner-line" not in out
    assert "token=***" in out and "name=shop-it" in out


def test_a_file_that_is_not_key_value_lines_is_secret_as_a_whole_and_by_line():
    from tasks.env_files import secret_values

    key = '{\n  "private_key": "pk-0123456789abcdef",\n  "type": "service_account"\n}'
    values = secret_values(key)
    assert values == [key]


def test_env_file_public_keys_are_configurable(tmp_path):
    checkout = Checkout(path=tmp_path, sha="a" * 40, repository="file:///x")
    declared = EnvFile(secret_block="e", path=".env", public_keys=["SITE_*"])
    written = fetch_env_files.fn(checkout, [declared], {"e": Secret(value="SITE_TITLE=My Shop\nKEY=k-123456\n")})
    values = redaction_list(checkout, written, [declared])
    assert "k-123456" in values and "My Shop" not in values


# --- JUnit ----------------------------------------------------------------------------------------

NODE_TESTS = '''import test, { describe, it } from "node:test";
import assert from "node:assert";
test("top one", () => {});
test("top two fails", () => { assert.equal(1, 2, "leaked tok-55aa66bb in a message"); });
test("top three", () => {});
describe("suite", () => { it("inner", () => {}); it("inner fails", () => { throw new Error("bad"); }); });
'''


def test_node_test_top_level_cases_are_parsed_and_a_failing_one_counts(tmp_path):
    """Regression: only cases inside <testsuite> were read (1 of 3 top-level ones) and "0 failed" showed."""
    import shutil
    import subprocess

    if not shutil.which("node"):
        pytest.skip("node is not installed")
    (tmp_path / "a.test.mjs").write_text(NODE_TESTS)
    subprocess.run(["node", "--test", "--test-reporter=junit", "--test-reporter-destination=junit.xml",
                    "a.test.mjs"], cwd=tmp_path, capture_output=True, timeout=60)
    cases = parse_junit(tmp_path / "junit.xml", ["tok-55aa66bb"])
    outcomes = {c.name: (c.suite, c.outcome) for c in cases}
    assert outcomes == {"top one": ("", "passed"), "top two fails": ("", "failed"), "top three": ("", "passed"),
                        "inner": ("suite", "passed"), "inner fails": ("suite", "failed")}
    failing = next(c for c in cases if c.name == "top two fails")
    assert "tok-55aa66bb" not in failing.message and "***" in failing.message


def test_several_reports_by_glob_stay_inside_the_component(tmp_path):
    from tasks.app_tests import report_files

    (tmp_path / "reports").mkdir()
    for name in ("unit.xml", "api.xml"):
        (tmp_path / "reports" / name).write_text("<testsuites/>")
    (tmp_path / "junit.xml").write_text("<testsuites/>")
    (tmp_path.parent / "outside.xml").write_text("<testsuites/>")
    found = report_files(tmp_path, ["reports/*.xml", "junit.xml", "reports/unit.xml", "../outside.xml"])
    assert sorted(p.name for p in found) == ["api.xml", "junit.xml", "unit.xml"]
