"""The MLOps champion comparison, without a stack (the pipeline against the real stack:
tests/integration/flows/test_mlops.py)."""

from __future__ import annotations

import pytest

from opsflow.core.errors import MlopsError
from tasks.mlops.champion import Candidate, Champion, compare_to_champion

SPEC = {"accuracy": {"direction": "higher", "threshold": 0.0}, "log_loss": {"direction": "lower", "threshold": 0.0}}


def test_compare_honours_directions_and_thresholds():
    champ = Champion("3", "r", {"accuracy": 0.80, "log_loss": 0.50}, {"train.C": "1.0"})
    better = compare_to_champion(Candidate({"accuracy": 0.82, "log_loss": 0.45}, {"train.C": "2.0"}), champ, SPEC)
    assert better.verdict == "beats champion" and [r.passed for r in better.rows] == [True, True]
    assert better.differing_params == {"train.C": ("1.0", "2.0")}
    assert round(better.rows[1].delta, 4) == -0.05 and round(better.rows[1].delta_pct, 2) == -10.0
    worse = compare_to_champion(Candidate({"accuracy": 0.82, "log_loss": 0.55}, {}), champ, SPEC)
    assert worse.verdict == "does not beat champion" and [r.passed for r in worse.rows] == [True, False]
    strict = {**SPEC, "accuracy": {"direction": "higher", "threshold": 0.05}}
    assert not compare_to_champion(Candidate({"accuracy": 0.82, "log_loss": 0.45}, {}), champ, strict).passed
    first = compare_to_champion(Candidate({"accuracy": 0.82, "log_loss": 0.45}, {}), None, SPEC)
    assert first.verdict == "no champion yet" and first.passed
    with pytest.raises(MlopsError, match="missing from the champion"):
        compare_to_champion(Candidate({"accuracy": 0.8, "log_loss": 0.4}, {}),
                            Champion("1", "r", {"accuracy": 0.8}, {}), SPEC)
