"""Running a component's declared tests and reading their JUnit XML report."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from blocks.application import Component
from opsflow.core.errors import CommandFailed, OpsflowError, TestsFailed
from opsflow.core.proc import run
from opsflow.core.redact import redact
from tasks.build import component_dir
from tasks.build.caches import TreeCache
from tasks.build.env import build_environment
from tasks.git import Checkout


@dataclass(frozen=True)
class TestCase:
    suite: str
    name: str
    outcome: str  # passed | failed | error | skipped
    seconds: float
    message: str = ""


@dataclass(frozen=True)
class TestReport:
    """What a component's tests did."""

    component: str
    passed: int
    failed: int
    errors: int
    skipped: int
    seconds: float
    cases: list[TestCase] = field(default_factory=list)
    exit_code: int = 0
    detail: str = ""  # why the command failed when no test case says so (e.g. a compile error)

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.errors + self.skipped

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.errors == 0 and self.exit_code == 0

    @property
    def failed_names(self) -> list[str]:
        failed = [c for c in self.cases if c.outcome in ("failed", "error")]
        return [f"{c.suite} \u203a {c.name}" if c.suite else c.name for c in failed]

    def summary(self) -> dict:
        data = asdict(self)
        data.pop("cases")
        data["failed_names"] = self.failed_names
        return data


def _seconds(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


def parse_junit(path: Path, secrets: list[str] | None = None) -> list[TestCase]:
    """Test cases of a JUnit XML file: ``<testsuites>`` or a single ``<testsuite>``, nested suites, and cases
    outside any suite (``node --test``'s top-level tests are children of ``<testsuites>``).

    Names and messages are redacted (``secrets`` and the registered values): they reach the report table,
    the PR comment and state messages.
    """
    try:
        root = SafeET.parse(path).getroot()  # written by the pull request's code: untrusted
    except (ET.ParseError, DefusedXmlException) as exc:
        raise OpsflowError(f"the JUnit report {path} is not valid XML: {exc}") from exc
    secrets = secrets or []
    suite_of = {}
    for suite in root.iter("testsuite"):
        for child in suite:
            suite_of[child] = suite
    cases = []
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                lines = (node.get("message") or node.text or "").strip().splitlines()[0:1]
                message = lines[0][:300] if lines else ""
                break
        # Node's reporter puts classname="test" on every case; the enclosing suite's name says more.
        classname = case.get("classname")
        suite = suite_of.get(case)
        suite_name = ((suite.get("name") if suite is not None else "") if classname in (None, "", "test")
                      else classname) or ""
        cases.append(TestCase(suite=redact(suite_name, secrets), name=redact(case.get("name", "?"), secrets),
                              outcome=outcome, seconds=_seconds(case.get("time")), message=redact(message, secrets)))
    return cases


def report_files(cwd: Path, patterns: list[str]) -> list[Path]:
    """The files the JUnit globs match under ``cwd`` (never outside it), sorted, each once."""
    root = cwd.resolve()
    found = {p.resolve() for pattern in patterns for p in cwd.glob(pattern) if p.is_file()}
    return sorted(p for p in found if root in p.parents)


@task(name="run-tests", task_run_name="test-{component.name}")
def run_tests(checkout: Checkout, component: Component, redact_values: list[str] | None = None,
              timeout: float = 1800, cache: TreeCache | None = None) -> TestReport:
    """Run the component's test command (scrubbed environment) and parse its JUnit reports into a Prefect
    table artifact (names and messages redacted).

    Raises:
        TestsFailed: a test failed or the command exited non-zero (``.report`` has the details).
        OpsflowError: the declared JUnit report was not written.
    """
    logger = get_run_logger()
    if component.test_command is None:
        logger.info("%s declares no tests", component.name)
        return TestReport(component=component.name, passed=0, failed=0, errors=0, skipped=0, seconds=0)
    cwd = component_dir(checkout, component)
    patterns = component.junit_globs
    for stale in report_files(cwd, patterns):
        stale.unlink()
    secrets = redact_values or []
    started = time.monotonic()
    exit_code, detail = 0, ""
    try:
        run(component.test_command, cwd=cwd, secrets=secrets, timeout=timeout, logger=logger,
            env=build_environment(checkout, cache), isolated=True)
    except CommandFailed as exc:
        exit_code, detail = exc.returncode if exc.returncode is not None else -1, exc.output_tail[-500:]
    seconds = time.monotonic() - started
    cases: list[TestCase] = []
    if patterns:
        reports = report_files(cwd, patterns)
        if not reports:
            if exit_code != 0:  # the command failed before any test ran (e.g. the tests did not compile)
                why = f"exit code {exit_code} before any JUnit report was written; last output: {detail[-300:]}"
                raise TestsFailed(TestReport(component=component.name, passed=0, failed=0, errors=0, skipped=0,
                                             seconds=round(seconds, 2), exit_code=exit_code, detail=why), why)
            raise OpsflowError(f"tests of {component.name!r} passed but wrote no JUnit report matching "
                               f"{', '.join(patterns)}; check the test command")
        for path in reports:
            cases += parse_junit(path, secrets)
    count = {o: sum(c.outcome == o for c in cases) for o in ("passed", "failed", "error", "skipped")}
    if exit_code != 0 and not count["failed"] and not count["error"]:
        detail = (f"the test command exited with {exit_code} although no test case in the report failed; "
                  f"last output: {detail[-300:]}")
    report = TestReport(component=component.name, passed=count["passed"], failed=count["failed"],
                        errors=count["error"], skipped=count["skipped"], seconds=round(seconds, 2), cases=cases,
                        exit_code=exit_code, detail=detail if exit_code else "")
    if cases:
        create_table_artifact(
            key="tests-" + re.sub(r"[^a-z0-9-]+", "-", component.name.lower()),
            table=[{"suite": c.suite, "test": c.name, "outcome": c.outcome, "seconds": c.seconds,
                    "message": c.message} for c in cases],
            description=f"Tests of {component.name}: {report.passed} passed, {report.failed} failed, "
                        f"{report.errors} errors, {report.skipped} skipped",
        )
    logger.info("tests of %s: %d passed, %d failed, %d errors, %d skipped", component.name, report.passed,
                report.failed, report.errors, report.skipped)
    if not report.ok:
        raise TestsFailed(report, detail)
    return report
