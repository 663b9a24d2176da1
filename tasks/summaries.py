"""The text of pipeline reports (PR comments and Prefect markdown artifacts): pure functions."""

from __future__ import annotations

from dataclasses import dataclass, field


def tests_passed(tests: dict | None) -> bool:
    """Whether a test summary (``TestReport.summary()``) records a run that passed."""
    return bool(tests) and not tests.get("failed_names") and not tests.get("failed") and not tests.get("errors") \
        and tests.get("exit_code", 0) == 0


@dataclass
class ComponentOutcome:
    """What the pipeline did for one component."""

    component: str
    artifact_key: str | None = None
    artifact_digest: str | None = None
    artifact_size: int | None = None
    artifact_reused: bool = False
    tests: dict | None = None
    image_ref: str | None = None
    image_tags: list[str] = field(default_factory=list)
    tags_added: list[str] = field(default_factory=list)  # of image_tags, those this run pushed or moved
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and (self.tests is None or tests_passed(self.tests))


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _tests(t: dict | None) -> str:
    if not t:
        return "—"
    text = f"{t['passed']} passed"
    for key in ("failed", "errors", "skipped"):
        if t.get(key):
            text += f", {t[key]} {key}"
    return text


def pipeline_report(title: str, sha: str, outcomes: list[ComponentOutcome], run_url: str | None,
                    total_seconds: float) -> str:
    """Markdown for a PR comment and the run's summary artifact."""
    ok = all(o.ok for o in outcomes)
    images = any(o.image_ref for o in outcomes)  # a pull request run pushes none: no empty column
    lines = [f"### {'✅' if ok else '❌'} {title} · `{sha[:7]}`", "",
             "| component | artifact | size | tests | " + ("image | " if images else "") + "time |",
             "|---|---|---|---|" + ("---|" if images else "") + "---|"]
    for o in outcomes:
        artifact = f"`{o.artifact_key}`" + (" (reused)" if o.artifact_reused else "") if o.artifact_key else "—"
        image = (f"`{o.image_ref}` | " if o.image_ref else "— | ") if images else ""
        lines.append(f"| {o.component} | {artifact} | {_size(o.artifact_size)} | {_tests(o.tests)} | {image}"
                     f"{o.seconds:.1f}s |")
    problems = [(o.component, o.error) for o in outcomes if o.error]
    failed_tests = [(o.component, n) for o in outcomes for n in (o.tests or {}).get("failed_names", [])]
    failed_tests += [(o.component, o.tests["detail"]) for o in outcomes
                     if o.tests and o.tests.get("detail") and not o.tests.get("failed_names")]
    if failed_tests:
        lines += ["", "**Failed tests**", ""] + [f"- {c}: `{n}`" for c, n in failed_tests]
    if problems:
        lines += ["", "**Errors**", ""] + [f"- {c}: {e.splitlines()[0][:400]}" for c, e in problems]
    tags = sorted({t for o in outcomes for t in o.image_tags})
    if tags:
        lines += ["", f"Tags: {', '.join(f'`{t}`' for t in tags)}"]
        added = [(o.component, o.tags_added) for o in outcomes if o.image_ref]
        lines += [f"- {c}: " + (f"added {', '.join(f'`{t}`' for t in a)}" if a else "all tags were there")
                  for c, a in added]
    lines += ["", f"Total {total_seconds:.1f}s" + (f" · [Prefect run]({run_url})" if run_url else "")]
    return "\n".join(lines) + "\n"


def failure_report(title: str, text: str, run_url: str | None, verdict: str = "failed") -> str:
    """The report of a run that failed before it had results: what failed and what to do (``text``)."""
    return f"### {title}\n**❌ {verdict}:** {text}\n\n" + (f"[Prefect run]({run_url})" if run_url else "")
