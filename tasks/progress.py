"""Progress of a long step, as the Prefect UI shows it: a progress artifact of the task run and a
log line at a steady cadence (not one per item, not only at the end).

    with StepProgress("registry cleanup", total=len(work), unit="calls") as progress:
        for item in work:
            ...
            progress.advance()

A step whose progress cannot be counted from inside (DVC's pull) passes ``measure``, a callable
read on every tick (bytes in DVC's cache, say).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Self

from prefect import get_run_logger

from opsflow.core.threads import start_thread


class StepProgress:
    """Report ``done / total`` every ``every_s`` seconds while the ``with`` block runs, from a
    background thread; then once more at the end. Thread-safe ``advance``. The progress artifact
    appears with the first report that has progress to show (or at the end, at 100 %).

    Reporting is best effort: a failed artifact update is logged once and never fails the step.
    """

    def __init__(self, what: str, total: float, unit: str = "", *, key: str | None = None, every_s: float = 2.0,
                 measure: Callable[[], float] | None = None, logger=None):
        self.what, self.total, self.unit, self.key, self.every_s = what, max(float(total), 0.0), unit, key, every_s
        self._measure = measure
        self._done = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._artifact_id = None
        self._last_reported: float | None = None
        self._warned = False
        self.logger = logger or get_run_logger()

    @property
    def done(self) -> float:
        """What is done now (one measurement, when ``measure`` was given), at most ``total``."""
        if self._measure is not None:
            value = self._measure()
            return min(value, self.total) if self.total else value
        with self._lock:
            return self._done

    def advance(self, n: float = 1) -> None:
        with self._lock:
            self._done += n

    def percent(self, done: float | None = None) -> float:
        done = self.done if done is None else done
        return 100.0 if not self.total else round(100.0 * min(done, self.total) / self.total, 1)

    def describe(self, done: float | None = None) -> str:
        done = self.done if done is None else done

        def fmt(x: float) -> str:
            return f"{x:,.0f}" if self.unit != "MB" else f"{x:,.1f}"

        unit = f" {self.unit}" if self.unit else ""
        return f"{self.what}: {fmt(done)} of {fmt(self.total)}{unit} ({self.percent(done):.0f}%)"

    def _report(self, done: float, final: bool = False) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        pct = self.percent(done)
        if not final and pct == self._last_reported:
            return
        self._last_reported = pct
        text = self.describe(done)
        self.logger.info("%s", text)
        try:
            if self._artifact_id is None:
                self._artifact_id = create_progress_artifact(pct, key=self.key, description=self.what)
            else:
                update_progress_artifact(self._artifact_id, pct, description=text)
        except Exception as exc:  # noqa: BLE001 - progress is for people watching; the step goes on
            if not self._warned:
                self._warned = True
                self.logger.warning("could not update the progress artifact of %s: %s", self.what, exc)

    def _tick(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self._report(self.done)
            except Exception:  # noqa: BLE001, S112 - a failed measurement is retried on the next tick
                continue

    def __enter__(self) -> Self:
        # The artifact is made by the first report (a tick with progress, or the end), not here: a step that
        # ends before its first tick makes one API call instead of two, and none delays its start.
        self._last_reported = 0.0
        self._thread = start_thread(self._tick, name=f"progress-{self.what}")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.every_s + 5)
        if exc_type is None:  # the step is done: whatever was measured, all of it is there
            self._report(self.total, final=True)
