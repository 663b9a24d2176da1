"""How long the Prefect server keeps old flow runs, their logs and artifacts, and events.

Prefect 3.8's database vacuum service (``prefect/server/services/db_vacuum.py``) deletes top-level
flow runs in a final state whose end is older than ``PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD``
(with their task runs, logs and artifacts) once ``flow_runs`` is in
``PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED`` — only ``events`` is by default, so without this the
database grows without limit — and events older than ``PREFECT_SERVER_EVENTS_RETENTION_PERIOD``.
opsflow enables both for the local stack, the compose file and the systemd docs, keeping runs for
:data:`DEFAULT_RUN_RETENTION_DAYS` days (``$OPSFLOW_RUN_RETENTION_DAYS`` changes it) and events for
Prefect's default 7 days. Running flow runs, scheduled ones and paused ones are never touched.
"""

from __future__ import annotations

import os

from opsflow.core.errors import InvalidInput

#: Finished flow runs (and their logs and artifacts) are kept this many days.
DEFAULT_RUN_RETENTION_DAYS = 30
#: Events (the Event feed, automations' history) are kept this many days (Prefect's default).
EVENT_RETENTION_DAYS = 7
#: Prefect refuses a flow-run retention under one hour; opsflow asks for whole days.
MIN_DAYS = 1


def retention_days(value: str | int | None = None) -> int:
    """The flow-run retention in days: ``value``, else ``$OPSFLOW_RUN_RETENTION_DAYS``, else the default."""
    raw = value if value is not None else os.environ.get("OPSFLOW_RUN_RETENTION_DAYS")
    if raw is None or raw == "":
        return DEFAULT_RUN_RETENTION_DAYS
    try:
        days = int(raw)
    except (TypeError, ValueError):
        raise InvalidInput(f"OPSFLOW_RUN_RETENTION_DAYS must be a whole number of days, not {raw!r}") from None
    if days < MIN_DAYS:
        raise InvalidInput(f"OPSFLOW_RUN_RETENTION_DAYS must be at least {MIN_DAYS}, not {days}")
    return days


def server_retention_env(days: int | None = None) -> dict[str, str]:
    """The Prefect server settings that turn the database vacuum on with opsflow's retention."""
    days = retention_days(days)
    return {
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(days * 86400),
        "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": f"P{EVENT_RETENTION_DAYS}D",  # a plain timedelta: ISO 8601
    }
