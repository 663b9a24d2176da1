"""Building container images on an engine through the Docker SDK, with OCI labels and streamed progress."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from blocks import DockerHostTarget
from blocks.fields import check_image_path, check_tag
from opsflow.core.errors import InvalidInput, RemoteError
from opsflow.registry.v2 import image_name

_PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class BuiltImage:
    """An image in the engine's store: its id, the repository and the tags it carries."""

    image_id: str
    repository: str
    tags: list[str]
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The repository without its registry host, e.g. ``shop-backend``."""
        return image_name(self.repository)


def validate_image_name(repository: str, tags: list[str]) -> None:
    """Reject a repository or tag Docker would refuse, and a tag list that is only ``latest``."""
    try:
        check_image_path(image_name(repository))
    except InvalidInput:
        raise InvalidInput(f"{repository!r} is not a valid image repository (lowercase name components separated "
                           "by '/')") from None
    if not tags:
        raise InvalidInput("an image needs at least one tag")
    for tag in tags:
        check_tag(tag)
    if set(tags) == {"latest"}:
        raise InvalidInput("'latest' cannot be an image's only tag; add the commit SHA or a version")


def oci_labels(revision: str, source: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The OCI annotations opsflow puts on every image it builds."""
    labels = {
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.source": source,
        "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    labels.update(extra or {})
    return labels


def stream_build(client, context: Path, tag: str, dockerfile: str = "Dockerfile", labels: dict[str, str] | None = None,
                 build_args: dict[str, str] | None = None, network_mode: str | None = None, logger=None,
                 where: str = "") -> str:
    """Run one build on ``client`` (a ``docker.DockerClient``), log its steps, return the image id.

    Raises:
        RemoteError: the build stream reported an error, or no image id came back.
    """
    image_id = None
    last_log = 0.0
    stream = client.api.build(
        path=str(context), dockerfile=dockerfile, tag=tag, labels=labels or {}, buildargs=build_args or {},
        rm=True, forcerm=True, decode=True, network_mode=network_mode,
    )
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error")
            raise RemoteError(f"image build of {where or tag} failed: {detail}")
        text = (chunk.get("stream") or "").strip()
        if logger and text and (text.startswith("Step ") or time.monotonic() - last_log > _PROGRESS_EVERY_S):
            logger.info("%s", text)
            last_log = time.monotonic()
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
    if image_id is None:
        raise RemoteError(f"image build of {where or tag} returned no image id")
    return image_id


def label_instruction(labels: dict[str, str]) -> str:
    """One ``LABEL "k"="v" ...`` Dockerfile line; values are quoted and ``$`` is not expanded."""
    bad = [k for k, v in labels.items() if "\n" in k or "\n" in v or "\r" in k or "\r" in v]
    if bad:
        raise InvalidInput(f"image label(s) {bad} contain a line break")
    quoted = (f"{json.dumps(k)}={json.dumps(v)}".replace("$", "\\$") for k, v in sorted(labels.items()))
    return "LABEL " + " ".join(quoted) + "\n"


def _build_run_name() -> str:
    """``build-image-<repository without its registry host>``."""
    from prefect.runtime import task_run

    return f"build-image-{image_name(task_run.parameters['repository'])}"


@task(name="build-image", task_run_name=_build_run_name)
def build_image(
    engine: DockerHostTarget,
    context: Path | Any,
    repository: str,
    tags: list[str],
    revision: str,
    source: str,
    dockerfile: str = "Dockerfile",
    build_args: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    network_mode: str | None = None,
) -> BuiltImage:
    """Build ``context`` into ``repository:tag`` for every tag, with OCI labels; the layer cache is used.

    ``context`` is a directory, or anything with a ``path`` attribute (a loaded artifact).

    Raises:
        InvalidInput: bad repository/tags or a missing Dockerfile, before the engine is touched.
        RemoteError: the build stream reported an error (the failing step's message is included).
    """
    validate_image_name(repository, tags)
    context = Path(getattr(context, "path", context))
    if not (context / dockerfile).is_file():
        raise InvalidInput(f"no {dockerfile} in build context {context}")
    logger = get_run_logger()
    all_labels = oci_labels(revision, source, labels)
    client = engine.get_client()
    try:
        with tempfile.TemporaryDirectory(prefix="opsflow-dockerfile-") as tmp:
            # The labels go in as one LABEL instruction: the engine's `labels` option adds a build step
            # (a layer commit) per label. docker-py sends a Dockerfile from outside the context beside
            # it, excluded from COPY.
            generated = Path(tmp) / "Dockerfile"
            generated.write_text((context / dockerfile).read_text().rstrip("\n") + "\n" + label_instruction(all_labels))
            image_id = stream_build(client, context, f"{repository}:{tags[0]}", dockerfile=str(generated),
                                    build_args=build_args, network_mode=network_mode, logger=logger,
                                    where=f"{repository} on {engine.name}")
        image = client.images.get(image_id)
        for tag in tags[1:]:
            image.tag(repository, tag)
    finally:
        client.close()
    logger.info("built %s (%s) tagged %s", repository, image_id[:19], ", ".join(tags))
    return BuiltImage(image_id=image_id, repository=repository, tags=list(tags), labels=all_labels)
