"""Several blocks read in one request (blocks/loading.py) against the stack's Prefect server: the same blocks
``Block.load`` gives, secrets included, each of its own type when two types share a name; a missing one is named."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prefect.blocks.system import Secret
from pydantic import SecretStr

from blocks import ContainerRegistry, ObjectStore
from blocks.loading import BlockNotFound, aload_blocks, load_blocks

pytestmark = [pytest.mark.stack]


@pytest.fixture(scope="module")
def saved(stack):
    name = f"loading-{uuid.uuid4().hex[:6]}"
    store = ObjectStore(endpoint_url="http://127.0.0.1:9", bucket="loading-bucket", access_key_id=SecretStr("ak"),
                        secret_access_key=SecretStr("sk-not-shown"))
    registry = ContainerRegistry(url="http://127.0.0.1:5999", username="u", password=SecretStr("pw-not-shown"))
    store.save(name, overwrite=True)
    registry.save(name, overwrite=True)  # the same name, another type
    Secret(value="s3cret").save(f"{name}-secret", overwrite=True)
    return name


def _same(loaded, cls, name):
    expected = cls.load(name)
    assert type(loaded) is cls and loaded.model_dump() == expected.model_dump()
    assert loaded._block_document_name == name and loaded._block_document_id == expected._block_document_id


def test_one_request_gives_what_block_load_gives(saved):
    store, nothing, registry, secret = load_blocks((ObjectStore, saved), (ContainerRegistry, None),
                                                   (ContainerRegistry, saved), (Secret, f"{saved}-secret"))
    assert nothing is None
    _same(store, ObjectStore, saved)
    _same(registry, ContainerRegistry, saved)
    assert store.secret_access_key.get_secret_value() == "sk-not-shown"
    assert registry.password.get_secret_value() == "pw-not-shown" and secret.get() == "s3cret"
    again = asyncio.run(aload_blocks((ContainerRegistry, saved), (ObjectStore, saved)))
    assert [type(b) for b in again] == [ContainerRegistry, ObjectStore]
    assert again[0].model_dump() == registry.model_dump()


def test_a_missing_block_is_named(saved):
    with pytest.raises(BlockNotFound) as err:
        load_blocks((ObjectStore, saved), (ObjectStore, f"{saved}-nope"))
    assert err.value.name == f"{saved}-nope" and err.value.cls is ObjectStore
    assert f"named {saved}-nope for block type opsflow-object-store" in str(err.value)
    with pytest.raises(ValueError, match="Unable to find block document"):
        asyncio.run(aload_blocks((ContainerRegistry, f"{saved}-secret")))  # that name is a Secret's


def test_a_read_started_early_is_taken_once_by_the_load(saved):
    """What a worker's run process does for a flow marked ``reads_blocks_first``: the load takes the answer read
    before (a change saved after that read is not in it), once: the next load reads again."""
    from blocks.loading import prefetch_blocks

    first = ContainerRegistry.load(saved)
    prefetch_blocks((ContainerRegistry, saved), (ObjectStore, saved)).result(timeout=30)
    ContainerRegistry(url="http://127.0.0.1:5998", username="u2", password=SecretStr("pw-not-shown")).save(
        saved, overwrite=True)
    try:
        registry, store = load_blocks((ContainerRegistry, saved), (ObjectStore, None), (ObjectStore, saved))[::2]
        assert registry.model_dump() == first.model_dump() and type(store) is ObjectStore  # the early answer
        [again] = load_blocks((ContainerRegistry, saved))  # other blocks: not the early answer
        assert again.username == "u2"
        registry, store = load_blocks((ContainerRegistry, saved), (ObjectStore, saved))
        assert registry.username == "u2"  # read again: the early answer was taken once
        prefetch_blocks((ContainerRegistry, saved), (ObjectStore, saved)).result(timeout=30)
        registry, _ = asyncio.run(aload_blocks((ContainerRegistry, saved), (ObjectStore, saved)))
        assert registry.username == "u2"
    finally:
        first.save(saved, overwrite=True)


def test_an_early_read_of_a_missing_block_leaves_the_load_to_name_it(saved):
    from blocks.loading import prefetch_blocks

    prefetch_blocks((ObjectStore, f"{saved}-nope")).result(timeout=30)
    with pytest.raises(BlockNotFound, match=f"named {saved}-nope"):
        load_blocks((ObjectStore, f"{saved}-nope"))
