"""StepProgress without a server (against the session's Prefect server: tests/integration/tasks/test_progress.py)."""

from __future__ import annotations

from tasks.progress import StepProgress


def test_progress_of_nothing_to_do_is_done():
    progress = StepProgress("empty", total=0, logger=_NullLogger())
    assert progress.percent() == 100.0 and progress.describe() == "empty: 0 of 0 (100%)"


class _NullLogger:
    def info(self, *args) -> None:
        pass

    warning = info
