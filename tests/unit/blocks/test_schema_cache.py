"""Block schemas built once per class (blocks/schema.py): the same schema Prefect builds, handed out as copies."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block

from blocks import BLOCK_CLASSES


@pytest.mark.parametrize("cls", BLOCK_CLASSES, ids=lambda c: c.__name__)
def test_the_cached_schema_is_the_one_prefect_builds_and_each_caller_gets_its_own_copy(cls):
    fresh = Block.model_json_schema.__func__(cls)  # Prefect's own, built now
    assert cls.model_json_schema() == fresh
    assert cls.model_json_schema(by_alias=False) == Block.model_json_schema.__func__(cls, by_alias=False)
    first = cls.model_json_schema()
    first["properties"].clear()
    assert cls.model_json_schema() == fresh
    assert cls._calculate_schema_checksum() == Block._calculate_schema_checksum.__func__(cls, fresh)
