"""Build-artifact retention: the pure plan (the housekeeping flow against the stack:
tests/integration/flows/test_housekeeping.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tasks.artifacts.retention import StoredArtifact, plan_artifact_retention

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def art(key: str, days: float, commit: str = "c" * 40, component: str = "backend") -> StoredArtifact:
    return StoredArtifact(key, "shop", component, commit, NOW - timedelta(days=days), 1000)


def test_retention_keeps_newest_per_component_deployed_commits_and_young_ones():
    artifacts = [art("b1", 1), art("b2", 40), art("b3", 50, commit="d" * 40), art("b4", 60), art("b5", 10),
                 art("f1", 90, component="frontend")]
    rows = {r.key: (r.action, r.reason) for r in plan_artifact_retention(artifacts, 1, 30, {"d" * 40}, NOW)}
    assert {k: a for k, (a, _) in rows.items()} == {"b1": "keep", "b5": "keep", "b2": "delete", "b3": "keep",
                                                    "b4": "delete", "f1": "keep"}
    assert "deployed" in rows["b3"][1] and "newest 1" in rows["f1"][1]
    with pytest.raises(ValueError, match="negative"):
        plan_artifact_retention(artifacts, -1, 30, set(), NOW)
