"""The candidate against the champion: metric by metric, in each metric's direction and threshold (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from opsflow.core.errors import InvalidInput, MlopsError


@dataclass
class Candidate:
    metrics: dict[str, float]
    params: dict[str, str]
    plots: list[str] = field(default_factory=list)  # plot files (paths in the checkout), logged at those paths
    metric_files: list[str] = field(default_factory=list)  # where the metrics were read (for messages)


@dataclass
class Champion:
    version: str
    run_id: str
    metrics: dict[str, float]
    params: dict[str, str]


@dataclass
class MetricRow:
    name: str
    direction: str
    threshold: float
    candidate: float
    champion: float | None
    delta: float | None
    delta_pct: float | None
    passed: bool


@dataclass
class Comparison:
    verdict: str  # "beats champion", "does not beat champion", "no champion yet"
    passed: bool
    rows: list[MetricRow] = field(default_factory=list)
    differing_params: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


def compare_to_champion(candidate: Candidate, champion: Champion | None, spec: dict[str, dict]) -> Comparison:
    """Compare metric by metric, honouring each metric's ``direction`` (higher/lower) and ``threshold``.

    The candidate beats the champion when no metric's gain (in its direction) is below its
    ``threshold`` (0: no regression; 0.01: must gain 0.01; -0.01: may lose 0.01) and one improves.
    Raises ``MlopsError`` when a configured metric is missing from the candidate or the champion.
    """
    rows: list[MetricRow] = []
    for name, rule in spec.items():
        direction = rule.get("direction", "higher")
        if direction not in ("higher", "lower"):
            raise InvalidInput(f"metric {name}: direction must be 'higher' or 'lower', not {direction!r}")
        threshold = float(rule.get("threshold", 0.0))
        if name not in candidate.metrics:
            where = ", ".join(candidate.metric_files) or "its metrics"
            known = ", ".join(sorted(candidate.metrics)) or "none"
            raise MlopsError(f"metric {name!r} is missing from the candidate's metrics ({where} has {known}): "
                             f"make the experiment write it or name one of those in opsflow-ml.yaml")
        cand = candidate.metrics[name]
        if champion is None:
            rows.append(MetricRow(name, direction, threshold, cand, None, None, None, True))
            continue
        if name not in champion.metrics:
            raise MlopsError(f"metric {name!r} is missing from the champion (version {champion.version}): "
                             f"re-log the champion with it, or drop the metric from opsflow-ml.yaml")
        champ = champion.metrics[name]
        delta = cand - champ
        pct = (delta / abs(champ) * 100) if champ else None
        gain = delta if direction == "higher" else -delta
        rows.append(MetricRow(name, direction, threshold, cand, champ, delta, pct, gain >= threshold))
    if champion is None:
        return Comparison("no champion yet", True, rows)
    differing = {k: (champion.params.get(k), candidate.params.get(k))
                 for k in sorted(set(champion.params) | set(candidate.params))
                 if champion.params.get(k) != candidate.params.get(k)}
    improved = any((r.delta or 0) * (1 if r.direction == "higher" else -1) > 0 for r in rows)
    passed = all(r.passed for r in rows) and improved
    return Comparison("beats champion" if passed else "does not beat champion", passed, rows, differing)


