"""Several blocks in one request: :func:`aload_blocks` (async flows) and :func:`load_blocks` (sync).

A run loads four to six blocks before its first step (the application, its object store, registry,
targets, forge). ``Block.load`` reads each by name, one request each, and the server answers them one
after the other: on the default stack (quiet, 2 cores) a read costs the server ~22 ms, four side by side
took 70-90 ms, and in a manual deploy, beside its deploy lock, 130-200 ms. Prefect's own
``POST /block_documents/filter`` answers all of them at once (35-55 ms for the same four), through the
Prefect client (its timeouts and retries). The documents become blocks as ``Block.aload`` makes them
after its read: ``Block._load_from_block_document`` (Prefect 3.8, private; the one private Prefect name
outside ``opsflow/worker/prefect_adapter.py``: ``tests/unit/blocks/test_loading.py`` fails naming it
when Prefect moves it). A name that does not exist raises :class:`BlockNotFound`, a ``ValueError`` saying
what Prefect's says ("Unable to find block document named ...").

A flow marked with :func:`reads_blocks_first` names the blocks it loads first; a worker's run process starts
that read (:func:`prefetch_blocks`) while Prefect's engine makes its own round trips before the flow's body,
and the flow's load takes the answer. Measured with ``bench/trigger.py`` (alternating the worker's code before
and after on one stack, 3 x 15 deliveries): webhook to first task p50 0.395 s before, 0.367 s after (with the
zygote's rehearsal, ``opsflow/worker/runner.py``).
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from prefect.blocks.core import Block

from opsflow.core.threads import start_thread

Wanted = tuple[type[Block], "str | None"]
#: The attribute :func:`reads_blocks_first` sets on a flow's function: ``(arguments) -> None``, starting the reads.
PREFETCH_ATTRIBUTE = "opsflow_prefetch"
#: The longest a load waits for a read already under way before it asks again itself.
PREFETCH_WAIT_S = 60.0
#: An early read started longer ago than this is not taken: the load reads again. A flow that failed before its
#: load left its read behind, and a later load in the same process (a notebook, a test session) must not see blocks
#: as they were then.
PREFETCH_FRESH_S = 30.0
_prefetched: dict[str, tuple[float, Future]] = {}
_prefetched_lock = threading.Lock()


class BlockNotFound(ValueError):
    """No block of ``cls`` named ``name`` (a ValueError, as ``Block.load`` raises)."""

    def __init__(self, cls: type[Block], name: str):
        super().__init__(f"Unable to find block document named {name} for block type {cls.get_block_type_slug()}")
        self.cls, self.name = cls, name


def _request_body(named: list[tuple[type[Block], str]]) -> dict:
    return {"block_documents": {"name": {"any_": sorted({name for _, name in named})}},
            "block_types": {"slug": {"any_": sorted({cls.get_block_type_slug() for cls, _ in named})}},
            "include_secrets": True, "limit": len(named) * len(named)}


def _blocks(wanted: list[Wanted], answer: list[dict]) -> list[Block | None]:
    from prefect.client.schemas.objects import BlockDocument

    found = {(doc.block_type.slug if doc.block_type else None, doc.name): doc
             for doc in BlockDocument.model_validate_list(answer)}
    blocks: list[Block | None] = []
    for cls, name in wanted:
        if not name:
            blocks.append(None)
            continue
        doc = found.get((cls.get_block_type_slug(), name))
        if doc is None:
            raise BlockNotFound(cls, name)
        blocks.append(cls._load_from_block_document(doc))
    return blocks


def _key(named: list[tuple[type[Block], str]]) -> str:
    return json.dumps(_request_body(named), sort_keys=True)


def prefetch_blocks(*wanted: Wanted) -> Future | None:
    """Start reading these blocks now, in a thread of this process: the next :func:`load_blocks` or
    :func:`aload_blocks` of the same blocks takes that answer instead of asking again (once; a later load reads
    again). For a worker's run process, whose flow loads its blocks before anything else: the read then goes
    beside Prefect's engine's own round trips on its way to ``Running`` (``opsflow/worker/runner.py``), not after
    them (a read took 40-45 ms on the default stack, the engine's trips 70-100 ms). A read that fails is
    forgotten: the load asks again and raises what it gets. Returns the read's future (None: nothing to read)."""
    named = [(cls, name) for cls, name in wanted if name]
    if not named:
        return None
    future: Future = Future()

    def read() -> None:
        try:
            future.set_result(_read(named))
        except BaseException as exc:  # noqa: BLE001 - handed to the load, which reads again
            future.set_exception(exc)

    with _prefetched_lock:
        _prefetched[_key(named)] = (time.monotonic(), future)
    start_thread(read, name="prefetch-blocks")  # in a copy of this context: the run's settings (API URL, auth)
    return future


def _take(named: list[tuple[type[Block], str]]) -> Future | None:
    with _prefetched_lock:
        started, future = _prefetched.pop(_key(named), (0.0, None))
    return future if time.monotonic() - started <= PREFETCH_FRESH_S else None


def _answer(future: Future | None) -> list[dict] | None:
    """The prefetched documents, or None when there was no read under way or it failed."""
    if future is None:
        return None
    try:
        return future.result(timeout=PREFETCH_WAIT_S)
    except Exception:  # noqa: BLE001 - the caller reads again and reports what that gives
        return None


def reads_blocks_first(blocks: Callable[[Mapping[str, Any]], Iterable[Wanted]]):
    """Mark a flow function whose first step loads the blocks ``blocks(arguments)`` names (``arguments``: the
    run's parameters with the flow's defaults), so they are read while Prefect's engine starts the run
    (:func:`start_declared_reads`: a worker's run process, and a call of a ``flows.options.flow``). Put it under
    ``@flow``; the function is unchanged."""
    def mark(fn):
        setattr(fn, PREFETCH_ATTRIBUTE, lambda arguments: prefetch_blocks(*blocks(arguments)))
        return fn
    return mark


def start_declared_reads(fn: Callable, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                         logger: logging.Logger | None = None) -> None:
    """Start the reads ``fn`` declares with :func:`reads_blocks_first`, for a run of it with ``args`` and ``kwargs``
    (the flow's defaults filled in); nothing for an undeclared function. A head start only: arguments that do not
    bind, or a declaration that fails, start nothing (said at debug level), and the flow reads its blocks itself."""
    hook = getattr(fn, PREFETCH_ATTRIBUTE, None)
    if not callable(hook):
        return
    try:
        bound = inspect.signature(fn).bind_partial(*args, **(kwargs or {}))
        bound.apply_defaults()
        hook(dict(bound.arguments))
    except Exception as exc:  # noqa: BLE001 - the flow loads what it needs anyway
        (logger or logging.getLogger(__name__)).debug("no early read of the flow's blocks: %s: %s",
                                                      type(exc).__name__, exc)


def _read(named: list[tuple[type[Block], str]]) -> list[dict]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        response = client.request("POST", "/block_documents/filter", json=_request_body(named))
    response.raise_for_status()
    return response.json()


async def aload_blocks(*wanted: Wanted) -> list[Block | None]:
    """The blocks of ``(block class, name)`` pairs, read in one request; None for a pair without a name.
    Raises BlockNotFound (a ValueError, as ``Block.aload``) for the first pair whose block does not exist."""
    import asyncio
    import contextlib

    from prefect.client.utilities import get_or_create_client

    named = [(cls, name) for cls, name in wanted if name]
    if not named:
        return [None] * len(wanted)
    future = _take(named)
    if future is not None:
        answer = _answer(future) if future.done() else await asyncio.to_thread(_answer, future)
        if answer is not None:
            return _blocks(list(wanted), answer)
    client, inferred = get_or_create_client()  # the run's client when there is one, as Block.aload takes it
    async with (contextlib.nullcontext(client) if inferred else client) as client:
        response = await client.request("POST", "/block_documents/filter", json=_request_body(named))
    response.raise_for_status()
    return _blocks(list(wanted), response.json())


def load_blocks(*wanted: Wanted) -> list[Block | None]:
    """:func:`aload_blocks` for sync callers (Prefect's sync client)."""
    named = [(cls, name) for cls, name in wanted if name]
    if not named:
        return [None] * len(wanted)
    answer = _answer(_take(named))
    return _blocks(list(wanted), answer if answer is not None else _read(named))
