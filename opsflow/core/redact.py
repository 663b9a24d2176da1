"""Removing secret values from text before it reaches a log, an exception, an artifact or an event.

Two ways in:

* ``redact(text, secrets)`` masks the given values (and everything registered, below);
* ``register(values)`` adds values to this process's registry when a run loads them (block secrets,
  env file values): from then on every ``redact`` call, every :class:`opsflow.core.errors.OpsflowError`
  message and every log record passing a handler with :class:`RedactingFilter` is masked too. A flow
  run has a process of its own (the worker forks one per run), so the registry is the run's.

A secret is also matched line by line: a multi-line value (a PEM key, a JSON credential) is printed
one line at a time by builds, so each of its lines is a value of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

MASK = "***"
MIN_LENGTH = 4  # shorter values would shred ordinary output

_lock = threading.Lock()
_registered: set[str] = set()
_sorted_cache: dict[frozenset[str], list[str]] = {}  # one entry: the registry's values, longest first


def variants(value: str) -> set[str]:
    """The strings to mask for one secret value: the value and each of its lines (stripped)."""
    out = {value} if len(value) >= MIN_LENGTH else set()
    if "\n" in value or "\r" in value:
        out |= {line.strip() for line in value.splitlines() if len(line.strip()) >= MIN_LENGTH}
    stripped = value.strip()
    if len(stripped) >= MIN_LENGTH:
        out.add(stripped)
    return out


def register(values: Iterable[str | None]) -> None:
    """Add secret values to this process's registry (masked by every later ``redact``)."""
    new = set()
    for value in values:
        if value:
            new |= variants(str(value))
    if new:
        with _lock:
            _registered.update(new)


def registered() -> frozenset[str]:
    """The values registered so far (for tests and the secret grep)."""
    with _lock:
        return frozenset(_registered)


def forget_all() -> None:
    """Empty the registry (tests only)."""
    with _lock:
        _registered.clear()
        _sorted_cache.clear()


def _ordered(extra: Iterable[str]) -> list[str]:
    """Registered and extra values, longest first, so a secret containing another is fully masked."""
    extra_set = set()
    for value in extra:
        if value:
            extra_set |= variants(value)
    with _lock:
        reg = frozenset(_registered)
        cached = _sorted_cache.get(reg)
        if cached is None:
            cached = sorted(reg, key=len, reverse=True)
            _sorted_cache.clear()
            _sorted_cache[reg] = cached
    if not extra_set - reg:
        return cached
    return sorted(reg | extra_set, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every secret value (given or registered) and each of its lines replaced by ``***``.

    Values shorter than 4 characters are ignored: masking them would shred ordinary output.
    """
    if not text:
        return text
    for secret in _ordered(secrets):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_data(data, secrets: Iterable[str] = ()):
    """``data`` (str, list, tuple, dict, nested) with every string redacted: for tables and JSON payloads."""
    secrets = list(secrets)
    if isinstance(data, str):
        return redact(data, secrets)
    if isinstance(data, dict):
        return {redact_data(k, secrets): redact_data(v, secrets) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(redact_data(v, secrets) for v in data)
    return data


class RedactingFilter(logging.Filter):
    """A handler filter that masks registered secrets in the record's message and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not registered():
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a record whose args do not fit its format: mask what is there
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None  # the handler prints exc_text; the raw exception would be formatted again
        return True


_FILTER = RedactingFilter()


LOGGERS = ("", "prefect", "prefect.flow_runs", "prefect.task_runs")


def install_log_redaction(logger_names: Iterable[str] = LOGGERS) -> None:
    """Add :class:`RedactingFilter` to every handler of these loggers (once): the run log sent to the
    Prefect API, the console the worker's log file captures, and whatever else is configured."""
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
