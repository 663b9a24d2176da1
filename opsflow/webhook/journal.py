"""The receiver's durable record of accepted deliveries (SQLite, WAL): written before the run and the 202.

Only the delivery id, event, repository, target deployment, parameters and idempotency key are
stored: never the body or another header value.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    forge TEXT NOT NULL,
    delivery TEXT NOT NULL,
    event TEXT NOT NULL,
    received_at REAL NOT NULL,
    deployment TEXT NOT NULL,
    parameters TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    flow_run_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    repo TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (forge, delivery)
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (received_at) WHERE flow_run_id IS NULL;
"""
_COLUMNS = "forge, delivery, event, repo, deployment, parameters, idempotency_key, flow_run_id, attempts, last_error"
KEEP_DISPATCHED_S = 30 * 86400  # a forge redelivers for days, not months


@dataclass(frozen=True)
class Entry:
    """One recorded delivery and what it starts."""

    forge: str
    delivery: str
    event: str
    repo: str
    deployment: str
    parameters: dict
    idempotency_key: str
    flow_run_id: str | None = None
    attempts: int = 0
    last_error: str | None = None


class Journal:
    """A SQLite file of deliveries; one connection shared by the request and retry threads (locked)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a delivery answered 202 survives a power cut too (one fsync of the WAL, ~1 ms).
        self._db.execute("PRAGMA synchronous=FULL")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(deliveries)")}
        if columns and "repo" not in columns:  # a journal written before the repo column existed
            self._db.execute("ALTER TABLE deliveries ADD COLUMN repo TEXT NOT NULL DEFAULT ''")
        self._db.executescript(SCHEMA)

    def record(self, entry: Entry) -> Entry:
        """Store a delivery once; returns the stored entry, which for a redelivery is the first one."""
        with self._lock:
            self._db.execute(
                f"INSERT OR IGNORE INTO deliveries ({_COLUMNS}, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 0,"
                " NULL, ?)",
                (entry.forge, entry.delivery, entry.event, entry.repo, entry.deployment,
                 json.dumps(entry.parameters, sort_keys=True), entry.idempotency_key, time.time()))
            return self._get(entry.forge, entry.delivery)

    def get(self, forge: str, delivery: str) -> Entry | None:
        with self._lock:
            return self._get(forge, delivery)

    def dispatched(self, forge: str, delivery: str, flow_run_id: str) -> None:
        """The delivery's run exists (created now, or found by its idempotency key)."""
        with self._lock:
            self._db.execute("UPDATE deliveries SET flow_run_id = ?, attempts = attempts + 1, last_error = NULL"
                             " WHERE forge = ? AND delivery = ?", (flow_run_id, forge, delivery))

    def failed(self, forge: str, delivery: str, error: str) -> None:
        """An attempt to create the run failed; ``error`` must carry no secret (it is stored)."""
        with self._lock:
            self._db.execute("UPDATE deliveries SET attempts = attempts + 1, last_error = ? WHERE forge = ? AND"
                             " delivery = ?", (error[:500], forge, delivery))

    def pending(self) -> list[Entry]:
        """Recorded deliveries whose run was not created yet, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM deliveries WHERE flow_run_id IS NULL"
                                    " ORDER BY received_at").fetchall()
        return [self._entry(row) for row in rows]

    def prune(self, older_than_s: float = KEEP_DISPATCHED_S) -> int:
        """Forget dispatched deliveries older than this (pending ones are kept); returns how many."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM deliveries WHERE flow_run_id IS NOT NULL AND received_at < ?",
                                      (time.time() - older_than_s,))
        return cursor.rowcount

    def _get(self, forge: str, delivery: str) -> Entry | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM deliveries WHERE forge = ? AND delivery = ?",
                               (forge, delivery)).fetchone()
        return self._entry(row) if row else None

    @staticmethod
    def _entry(row) -> Entry:
        return Entry(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7], row[8], row[9])

    def close(self) -> None:
        with self._lock:
            self._db.close()
