"""Unit tests never write outside their temporary directories."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def clusters_outside_homes_stay_in_tmp(monkeypatch, tmp_path):
    # pytest's tmp_path is in a 0700 directory: run as root, a stack home there gets its PostgreSQL cluster
    # under opsflow.stack.postgres.OUTSIDE_ROOT (/var/lib/opsflow), which is not a unit test's to touch.
    from opsflow.stack import postgres

    monkeypatch.setattr(postgres, "OUTSIDE_ROOT", tmp_path / "outside-root")
