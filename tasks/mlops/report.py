"""The MLOps report: the PR comment and markdown artifact comparing the candidate with the champion."""

from __future__ import annotations

from tasks.mlops.champion import Champion, Comparison, MetricRow


def threshold_text(row: MetricRow) -> str:
    """What a metric must reach to pass, e.g. ``accuracy ≥ champion``, ``log_loss ≤ champion - 0.01``
    (the candidate passes when its gain in the metric's direction is at least the threshold)."""
    higher = row.direction == "higher"
    bound = row.threshold if higher else -row.threshold  # candidate >= champion + t, or <= champion - t
    offset = "" if bound == 0 else f" {'+' if bound > 0 else '-'} {abs(bound):g}"
    return f"{row.name} {'≥' if higher else '≤'} champion{offset}"


def render_report(comparison: Comparison, model: str, data_hashes: dict[str, str], mlflow_url: str,
                  prefect_url: str | None, champion: Champion | None, plots: list[str] = ()) -> str:
    """The PR comment / markdown artifact; ``plots`` (artifact paths of the MLflow run) are linked
    to their page in the MLflow UI, never uploaded elsewhere."""
    thresholds = ", ".join(threshold_text(r) for r in comparison.rows)
    icon = "✅" if comparison.passed else "❌"
    lines = [f"### MLOps: {model}",
             f"**{icon} {comparison.verdict}**"
             + (f" (champion v{champion.version})" if champion else "") + f" — thresholds: {thresholds}", "",
             "| metric | candidate | champion | Δ | Δ% | pass/fail |", "|---|---|---|---|---|---|"]
    def fmt(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    for r in comparison.rows:
        pct = "—" if r.delta_pct is None else f"{r.delta_pct:+.2f}%"
        delta = "—" if r.delta is None else f"{r.delta:+.4f}"
        verdict = "—" if r.champion is None else ("pass" if r.passed else "fail")
        arrow = "↑" if r.direction == "higher" else "↓"
        lines.append(f"| {r.name} ({arrow}) | {fmt(r.candidate)} | {fmt(r.champion)} | {delta} | {pct} | {verdict} |")
    if comparison.differing_params:
        lines += ["", "**Params that differ from the champion:**", "", "| param | champion | candidate |",
                  "|---|---|---|"]
        lines += [f"| {k} | {a} | {b} |" for k, (a, b) in comparison.differing_params.items()]
    lines += ["", "**Data version (DVC):** " + (", ".join(f"`{k}` {v}" for k, v in data_hashes.items()) or "none"),
              ""]
    if plots:
        lines += ["**Plots:** " + ", ".join(f"[{p}]({mlflow_url}/artifacts/{p})" for p in plots), ""]
    lines.append(f"[MLflow run]({mlflow_url})" + (f" · [Prefect run]({prefect_url})" if prefect_url else ""))
    return "\n".join(lines)
