"""blocks/loading.py: the private Prefect step it uses is still there, and what it asks the server for."""

from __future__ import annotations

import inspect

import pytest
from prefect.blocks.core import Block
from prefect.blocks.system import Secret

from blocks import ContainerRegistry, ObjectStore
from blocks.loading import _blocks, _request_body


def test_prefect_still_makes_a_block_from_its_document_as_blocks_loading_expects():
    method = getattr(Block, "_load_from_block_document", None)
    assert method is not None, "Prefect moved Block._load_from_block_document: blocks/loading.py must change"
    assert list(inspect.signature(method).parameters)[:2] == ["block_document", "validate"]


def test_the_request_names_each_block_and_type_once_with_their_secrets():
    body = _request_body([(ObjectStore, "a"), (ContainerRegistry, "a"), (Secret, "b")])
    assert body["block_documents"] == {"name": {"any_": ["a", "b"]}}
    assert body["block_types"] == {"slug": {"any_": ["opsflow-container-registry", "opsflow-object-store", "secret"]}}
    assert body["include_secrets"] is True and body["limit"] >= 6  # every (name, type) pair fits


def test_an_answer_without_a_wanted_block_names_it():
    with pytest.raises(ValueError, match="named gone for block type secret"):
        _blocks([(Secret, "gone")], [])
