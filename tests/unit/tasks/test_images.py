"""build_image's checks before any engine is touched: labels, repository names and tags; run names
(on the real engine: tests/integration/tasks/test_images.py)."""

from __future__ import annotations

import pytest

from opsflow.core.errors import InvalidInput
from tasks.images.build import build_image, label_instruction


def test_a_label_with_a_line_break_is_refused():
    with pytest.raises(InvalidInput, match="line break"):
        label_instruction({"x": "a\nRUN rm -rf /"})


@pytest.mark.parametrize("repository, tags", [("Bad/Name", ["t"]), ("ok/name", ["latest"]), ("ok/name", ["a;b"])])
def test_bad_names_fail_before_the_engine_is_touched(repository, tags, tmp_path):
    from blocks import DockerHostTarget

    nowhere = DockerHostTarget(name="nowhere", base_url="tcp://127.0.0.1:1")
    with pytest.raises(InvalidInput):
        build_image.fn(nowhere, tmp_path, repository, tags, revision="r", source="s")


@pytest.mark.parametrize("repository, name", [
    ("127.0.0.1:5000/shop-backend", "shop-backend"), ("registry.example.com/team/app", "team/app"),
    ("localhost/app", "app"), ("team/app", "team/app"), ("app", "app"),
])
def test_run_names_show_the_repository_without_its_registry_host(repository, name):
    from opsflow.registry.v2 import image_name

    assert image_name(repository) == name
