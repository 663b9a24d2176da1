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
"""

from __future__ import annotations

from prefect.blocks.core import Block

Wanted = tuple[type[Block], "str | None"]


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


async def aload_blocks(*wanted: Wanted) -> list[Block | None]:
    """The blocks of ``(block class, name)`` pairs, read in one request; None for a pair without a name.
    Raises BlockNotFound (a ValueError, as ``Block.aload``) for the first pair whose block does not exist."""
    import contextlib

    from prefect.client.utilities import get_or_create_client

    named = [(cls, name) for cls, name in wanted if name]
    if not named:
        return [None] * len(wanted)
    client, inferred = get_or_create_client()  # the run's client when there is one, as Block.aload takes it
    async with (contextlib.nullcontext(client) if inferred else client) as client:
        response = await client.request("POST", "/block_documents/filter", json=_request_body(named))
    response.raise_for_status()
    return _blocks(list(wanted), response.json())


def load_blocks(*wanted: Wanted) -> list[Block | None]:
    """:func:`aload_blocks` for sync callers (Prefect's sync client)."""
    from prefect.client.orchestration import get_client

    named = [(cls, name) for cls, name in wanted if name]
    if not named:
        return [None] * len(wanted)
    with get_client(sync_client=True) as client:
        response = client.request("POST", "/block_documents/filter", json=_request_body(named))
    response.raise_for_status()
    return _blocks(list(wanted), response.json())
