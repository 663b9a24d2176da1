"""Threads that run in the caller's context: the one way opsflow starts a thread.

Prefect keeps its settings (the API URL set by ``temporary_settings``), the run logger and the
current flow/task run in context variables. A bare ``threading.Thread`` starts with an empty
context: a thread that logs or calls the API from it would find no API URL and start a temporary
server. Every thread opsflow starts runs in a copy of the context of the code that started it.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def start_thread(target: Callable[..., Any], *args: Any, name: str | None = None,
                 daemon: bool = True) -> threading.Thread:
    """Start ``target(*args)`` in a new thread, in a copy of the caller's context; returns the thread."""
    thread = threading.Thread(target=contextvars.copy_context().run, args=(target, *args), name=name,
                              daemon=daemon)
    thread.start()
    return thread


class ContextThreadPool(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose every call runs in a copy of the context it was submitted from
    (one copy per call: a context cannot be entered by two threads at once)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)
