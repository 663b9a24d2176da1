"""The pipeline report (PR comment and the run's summary artifact): pure text."""

from __future__ import annotations

from tasks.summaries import ComponentOutcome, pipeline_report

SHA = "70427b6e81d4bac5a4ebade4b1d4c654418567ec"
DIGEST = "sha256:" + "e1" * 32


def _table(report: str) -> list[list[str]]:
    rows = [line for line in report.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in rows]


def test_a_pull_request_report_has_no_image_column():
    report = pipeline_report("opsflow GitOps · shop · PR #3", SHA, [
        ComponentOutcome("backend", "shop/backend/ab12", "sha256:00", 3686, tests={"passed": 10}),
        ComponentOutcome("frontend", "shop/frontend/cd34", "sha256:01", 3277, True, tests={"passed": 6}),
    ], "http://ui/runs/flow-run/1", 12.3)
    header, _, *rows = _table(report)
    assert header == ["component", "artifact", "size", "tests", "time"]
    assert rows[1] == ["frontend", "`shop/frontend/cd34` (reused)", "3.2 KiB", "6 passed", "0.0s"]
    assert report.startswith("### ✅ opsflow GitOps · shop · PR #3 · `70427b6`")
    assert "[Prefect run](http://ui/runs/flow-run/1)" in report


def test_a_merge_report_names_each_pushed_image_by_digest():
    report = pipeline_report("opsflow GitOps · shop · merge", SHA, [
        ComponentOutcome("backend", "shop/backend/ab12", image_ref=f"127.0.0.1:5000/shop-backend@{DIGEST}",
                         image_tags=[SHA, "main"], tags_added=["main"], seconds=7.25),
        ComponentOutcome("frontend", error="push of shop-frontend failed: denied"),
    ], None, 1.0)
    header, _, backend, frontend = _table(report)
    assert header == ["component", "artifact", "size", "tests", "image", "time"]
    assert backend[4] == f"`127.0.0.1:5000/shop-backend@{DIGEST}`" and frontend[4] == "—"
    assert report.startswith("### ❌") and "- frontend: push of shop-frontend failed: denied" in report
    assert f"Tags: `{SHA}`, `main`" in report and "- backend: added `main`" in report
    assert backend[5] == "7.2s"  # a merge's time column shows each component's time (was always 0.0s)
