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
from tasks.build import component_dir
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


def parse_junit(path: Path) -> list[TestCase]:
    """Test cases of a JUnit XML file (``<testsuites>`` or a single ``<testsuite>``, nested suites too)."""
    try:
        root = SafeET.parse(path).getroot()  # written by the pull request's code: untrusted
    except (ET.ParseError, DefusedXmlException) as exc:
        raise OpsflowError(f"the JUnit report {path} is not valid XML: {exc}") from exc
    cases = []
    for suite in root.iter("testsuite"):
        for case in suite.findall("testcase"):
            outcome, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    outcome = {"failure": "failed"}.get(tag, tag)
                    message = (node.get("message") or node.text or "").strip().splitlines()[0:1]
                    message = message[0][:300] if message else ""
                    break
            # Node's reporter puts classname="test" on every case; the enclosing suite's name says more.
            classname = case.get("classname")
            suite_name = (suite.get("name") if classname in (None, "", "test") else classname) or ""
            cases.append(TestCase(suite=suite_name, name=case.get("name", "?"),
                                  outcome=outcome, seconds=float(case.get("time") or 0), message=message))
    return cases


@task(name="run-tests", task_run_name="test-{component.name}")
def run_tests(checkout: Checkout, component: Component, redact_values: list[str] | None = None,
              timeout: float = 1800) -> TestReport:
    """Run the component's test command and parse its JUnit report into a Prefect table artifact.

    Raises:
        TestsFailed: a test failed or the command exited non-zero (``.report`` has the details).
        OpsflowError: the declared JUnit report was not written.
    """
    logger = get_run_logger()
    if component.test_command is None:
        logger.info("%s declares no tests", component.name)
        return TestReport(component=component.name, passed=0, failed=0, errors=0, skipped=0, seconds=0)
    cwd = component_dir(checkout, component)
    report_path = (cwd / component.junit_report) if component.junit_report else None
    if report_path is not None and report_path.exists():
        report_path.unlink()
    started = time.monotonic()
    exit_code, detail = 0, ""
    try:
        run(component.test_command, cwd=cwd, secrets=redact_values or [], timeout=timeout, logger=logger,
            env={"CI": "true"})
    except CommandFailed as exc:
        exit_code, detail = exc.returncode if exc.returncode is not None else -1, exc.output_tail[-500:]
    seconds = time.monotonic() - started
    cases: list[TestCase] = []
    if report_path is not None:
        if not report_path.exists():
            if exit_code != 0:  # the command failed before any test ran (e.g. the tests did not compile)
                why = f"exit code {exit_code} before any JUnit report was written; last output: {detail[-300:]}"
                raise TestsFailed(TestReport(component=component.name, passed=0, failed=0, errors=0, skipped=0,
                                             seconds=round(seconds, 2), exit_code=exit_code, detail=why), why)
            raise OpsflowError(f"tests of {component.name!r} passed but wrote no JUnit report at "
                               f"{component.junit_report}; check the test command")
        cases = parse_junit(report_path)
    count = {o: sum(c.outcome == o for c in cases) for o in ("passed", "failed", "error", "skipped")}
    report = TestReport(component=component.name, passed=count["passed"], failed=count["failed"],
                        errors=count["error"], skipped=count["skipped"], seconds=round(seconds, 2), cases=cases,
                        exit_code=exit_code)
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
