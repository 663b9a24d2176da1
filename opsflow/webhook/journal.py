"""The receiver's durable record of accepted deliveries (SQLite, WAL): written before the 202.

Only the delivery id, event, target deployment, parameters and idempotency key are stored:
never the body or a header value.
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
    PRIMARY KEY (forge, delivery)
)
"""


@dataclass(frozen=True)
class Entry:
    forge: str
    delivery: str
    event: str
    deployment: str
    parameters: dict
    idempotency_key: str
    flow_run_id: str | None
    attempts: int


class Journal:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)
        self._lock = threading.Lock()

    def record(self, forge: str, delivery: str, event: str, deployment: str, parameters: dict,
               idempotency_key: str) -> Entry:
        """Store a delivery (once); returns the stored entry, which for a redelivery is the first one."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO deliveries (forge, delivery, event, received_at, deployment, parameters,"
                " idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (forge, delivery, event, time.time(), deployment, json.dumps(parameters, sort_keys=True),
                 idempotency_key))
            return self._get(forge, delivery)

    def dispatched(self, forge: str, delivery: str, flow_run_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE deliveries SET flow_run_id = ?, attempts = attempts + 1, last_error = NULL"
                             " WHERE forge = ? AND delivery = ?", (flow_run_id, forge, delivery))

    def failed(self, forge: str, delivery: str, error: str) -> None:
        with self._lock:
            self._db.execute("UPDATE deliveries SET attempts = attempts + 1, last_error = ? WHERE forge = ? AND"
                             " delivery = ?", (error[:500], forge, delivery))

    def pending(self) -> list[Entry]:
        """Recorded deliveries whose run was not created yet, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT forge, delivery, event, deployment, parameters, idempotency_key,"
                                    " flow_run_id, attempts FROM deliveries WHERE flow_run_id IS NULL"
                                    " ORDER BY received_at").fetchall()
        return [self._entry(row) for row in rows]

    def get(self, forge: str, delivery: str) -> Entry | None:
        """The recorded delivery, or None."""
        with self._lock:
            row = self._db.execute("SELECT forge, delivery, event, deployment, parameters, idempotency_key,"
                                   " flow_run_id, attempts FROM deliveries WHERE forge = ? AND delivery = ?",
                                   (forge, delivery)).fetchone()
        return self._entry(row) if row else None

    def _get(self, forge: str, delivery: str) -> Entry:
        row = self._db.execute("SELECT forge, delivery, event, deployment, parameters, idempotency_key,"
                               " flow_run_id, attempts FROM deliveries WHERE forge = ? AND delivery = ?",
                               (forge, delivery)).fetchone()
        return self._entry(row)

    @staticmethod
    def _entry(row) -> Entry:
        return Entry(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6], row[7])

    def close(self) -> None:
        with self._lock:
            self._db.close()
