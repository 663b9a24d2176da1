"""Reading a user's Dockerfile as written: stages, the images it starts from, labels in the built stage."""

from __future__ import annotations

import pytest

from opsflow.core.errors import InvalidInput
from tasks.images.build import base_images, insert_labels, syntax_image, uses_arg, without_syntax

DOCKERFILE = """# syntax=docker/dockerfile:1
ARG NODE_VERSION=20
ARG REGISTRY=registry.lan:5000
FROM ${REGISTRY}/base/node:${NODE_VERSION}-alpine AS runtime
WORKDIR /app
COPY . .
CMD ["node", "server.js"]

FROM runtime AS debug
ENV DEBUG=1

from busybox:1.36 as tools
"""


def test_the_images_a_build_starts_from_follow_build_args_and_the_target():
    assert base_images(DOCKERFILE) == ["registry.lan:5000/base/node:20-alpine", "busybox:1.36"]
    assert base_images(DOCKERFILE, {"NODE_VERSION": "22"}, target="debug") == ["registry.lan:5000/base/node:22-alpine"]
    assert base_images("FROM scratch\nCOPY a /a\n") == []


def test_labels_go_to_the_end_of_the_stage_that_is_built():
    lines = insert_labels(DOCKERFILE, {"org.opencontainers.image.revision": "abc"}, target="runtime").splitlines()
    label = lines.index('LABEL "org.opencontainers.image.revision"="abc"')
    assert lines[label - 1] == "" and lines[label + 1].startswith("FROM runtime AS debug")
    assert insert_labels(DOCKERFILE, {"a": "b"}).rstrip().endswith('LABEL "a"="b"')
    with pytest.raises(InvalidInput, match="no stage named 'prod'"):
        insert_labels(DOCKERFILE, {"a": "b"}, target="prod")


def test_the_syntax_directive_and_the_base_image_argument_are_recognised():
    assert syntax_image(DOCKERFILE) == "docker/dockerfile:1"
    assert syntax_image(without_syntax(DOCKERFILE)) is None
    assert not uses_arg(DOCKERFILE, "BASE_IMAGE") and uses_arg("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n", "BASE_IMAGE")
