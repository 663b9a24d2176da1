"""Building container images on an engine, with OCI labels and streamed progress.

The Dockerfile is the user's, as written: ``FROM`` any image the engine has or can pull (an image on
the configured registry is pulled with the registry block's credentials first; nothing else is
needed, no ``ARG BASE_IMAGE``), build args, a target stage. BuildKit builds it where the engine and a
docker CLI support it (``docker buildx build --load``, or a docker CLI older than 23 with
``DOCKER_BUILDKIT=1``: the engine's own BuildKit), else the engine's legacy builder through the Docker
SDK (``docker build``'s own fallback). The SDK has no BuildKit session, hence the CLI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from blocks import ContainerRegistry, DockerHostTarget
from blocks.fields import check_image_path, check_tag
from opsflow.core.errors import CommandFailed, InvalidInput, RemoteError
from opsflow.core.proc import run, scrubbed_environment
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
                 where: str = "", target: str | None = None) -> str:
    """Run one build on ``client`` (a ``docker.DockerClient``), log its steps, return the image id.

    Raises:
        RemoteError: the build stream reported an error, or no image id came back.
    """
    image_id = None
    last_log = 0.0
    stream = client.api.build(
        path=str(context), dockerfile=dockerfile, tag=tag, labels=labels or {}, buildargs=build_args or {},
        rm=True, forcerm=True, decode=True, network_mode=network_mode, target=target,
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


_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", re.IGNORECASE)
_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$", re.IGNORECASE)
_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}?")


@dataclass(frozen=True)
class Stage:
    """One ``FROM`` of a Dockerfile: the image expression, its name, and its lines (``end`` exclusive)."""

    image: str
    name: str | None
    start: int
    end: int


def dockerfile_stages(text: str) -> list[Stage]:
    """The stages of a Dockerfile, in order."""
    lines = text.splitlines()
    starts = [(i, m) for i, line in enumerate(lines) if (m := _FROM.match(line))]
    return [Stage(m.group(1), m.group(2), i, starts[n + 1][0] if n + 1 < len(starts) else len(lines))
            for n, (i, m) in enumerate(starts)]


def global_args(text: str) -> dict[str, str]:
    """``ARG name=default`` lines before the first ``FROM`` (the only ones a ``FROM`` line can use)."""
    args = {}
    for line in text.splitlines():
        if _FROM.match(line):
            break
        if m := _ARG.match(line):
            args[m.group(1)] = (m.group(2) or "").strip("\"'")
    return args


def substitute(expr: str, values: dict[str, str]) -> str:
    """``${NAME}``, ``$NAME`` and ``${NAME:-default}`` as the Dockerfile's ``FROM`` expands them."""
    return _VAR.sub(lambda m: values.get(m.group(1)) or (m.group(2) or ""), expr)


def base_images(text: str, build_args: dict[str, str] | None = None, target: str | None = None) -> list[str]:
    """The images the build starts from: every ``FROM`` up to ``target`` that is neither a stage nor scratch."""
    values = {**global_args(text), **(build_args or {})}
    seen, images = set(), []
    for stage in dockerfile_stages(text):
        image = substitute(stage.image, values)
        if image.lower() != "scratch" and image not in seen:
            images.append(image)
        seen.add((stage.name or "").lower())
        seen.add(image)
        if target and (stage.name or "").lower() == target.lower():
            break
    return [i for i in images if i.lower() not in seen - {i}]


_SYNTAX = re.compile(r"^#\s*syntax\s*=\s*(\S+)\s*$", re.IGNORECASE)


def syntax_image(text: str) -> str | None:
    """The frontend image of a ``# syntax=`` directive (first lines, before any instruction), if any."""
    for line in text.splitlines():
        if not line.startswith("#"):
            return None
        if m := _SYNTAX.match(line):
            return m.group(1)
    return None


def without_syntax(text: str) -> str:
    """The Dockerfile without its ``# syntax=`` directive (the engine's built-in frontend parses it)."""
    return "\n".join(line for line in text.splitlines() if not _SYNTAX.match(line)) + "\n"


def uses_arg(text: str, name: str) -> bool:
    """Whether the Dockerfile declares ``ARG name`` (e.g. ``BASE_IMAGE`` of opsflow's own base images)."""
    return any((m := _ARG.match(line)) and m.group(1) == name for line in text.splitlines())


def insert_labels(text: str, labels: dict[str, str], target: str | None = None) -> str:
    """The Dockerfile with one ``LABEL`` instruction at the end of the stage built (``target`` or the last)."""
    stages = dockerfile_stages(text)
    if not stages:
        raise InvalidInput("the Dockerfile has no FROM line")
    stage = stages[-1]
    if target:
        named = [s for s in stages if (s.name or "").lower() == target.lower()]
        if not named:
            raise InvalidInput(f"the Dockerfile has no stage named {target!r} (FROM ... AS {target})")
        stage = named[0]
    lines = text.splitlines()
    return "\n".join([*lines[:stage.end], label_instruction(labels).rstrip("\n"), *lines[stage.end:]]) + "\n"


@dataclass(frozen=True)
class Builder:
    """How images are built: ``argv`` of the BuildKit CLI build (empty: the engine's legacy builder)."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    why: str = ""

    @property
    def buildkit(self) -> bool:
        return bool(self.argv)


def _docker_clis() -> list[str]:
    found = []
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
        path = os.path.join(folder or ".", "docker")
        if os.access(path, os.X_OK) and os.path.realpath(path) not in map(os.path.realpath, found):
            found.append(path)
    return found


_BUILDERS: dict[str, Builder] = {}


def choose_builder(engine: DockerHostTarget) -> Builder:
    """BuildKit through a docker CLI when one can drive this engine's BuildKit, else the legacy builder."""
    if engine.base_url in _BUILDERS:
        return _BUILDERS[engine.base_url]
    builder = Builder((), why="no docker CLI with BuildKit (buildx, or a CLI older than 23)")
    if engine.tls_ca_cert or engine.tls_client_cert:
        builder = Builder((), why="the engine is reached over TLS: built through the SDK")
    elif os.environ.get("OPSFLOW_BUILDKIT", "auto") == "off":
        builder = Builder((), why="OPSFLOW_BUILDKIT=off")
    else:
        env = scrubbed_environment(tempfile.gettempdir(), {"DOCKER_HOST": engine.base_url})
        for cli in _docker_clis():
            try:
                run([cli, "buildx", "version"], env=env, isolated=True, timeout=20)
                builder = Builder((cli, "buildx", "build", "--load"), why=f"BuildKit via {cli} buildx")
                break
            except CommandFailed:
                pass
            try:
                version = run([cli, "version", "--format", "{{.Client.Version}} {{.Server.APIVersion}}"],
                              env=env, isolated=True, timeout=20).split()
            except CommandFailed:
                continue
            client_major = int(re.match(r"\d+", version[0]).group()) if version and version[0][:1].isdigit() else 99
            api = tuple(int(x) for x in version[1].split(".")) if len(version) > 1 else (0,)
            if client_major < 23 and api >= (1, 39):
                builder = Builder((cli, "build"), (("DOCKER_BUILDKIT", "1"),), why=f"the engine's BuildKit via {cli}")
                break
    _BUILDERS[engine.base_url] = builder
    return builder


def _build_run_name() -> str:
    """``build-image-<repository without its registry host>``."""
    from prefect.runtime import task_run

    return f"build-image-{image_name(task_run.parameters['repository'])}"


def _has_image(client, image: str) -> bool:
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_base_images(client, images: list[str], registry: ContainerRegistry | None, logger) -> None:
    """Every image a build starts from is in the engine: present, or pulled (with the registry block's
    credentials when it is on that registry).

    Raises:
        RemoteError: an image is neither present nor pullable (which one, and what to do).
    """
    import docker.errors

    for image in images:
        try:
            client.images.get(image)
            continue
        except docker.errors.ImageNotFound:
            pass
        ours = registry is not None and image.startswith(f"{registry.host}/")
        repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
        try:
            logger.info("pulling %s (FROM) into the engine", image)
            client.images.pull(repo, tag=tag or None, auth_config=registry.auth_config() if ours else None)
        except docker.errors.APIError as exc:
            hint = (f"push it to {registry.host}" if registry else "push it to your registry") + \
                " or load it into the build server's engine (docker load)"
            raise RemoteError(f"FROM {image}: the build server's engine does not have it and could not pull it "
                              f"({exc.explanation or exc}); {hint}") from None


def _cli_build(builder: Builder, engine: DockerHostTarget, context: Path, dockerfile: Path, repository: str,
               tags: list[str], build_args: dict[str, str], labels: dict[str, str], target: str | None,
               network: str | None, logger) -> str:
    with tempfile.TemporaryDirectory(prefix="opsflow-buildkit-") as tmp:
        iidfile = Path(tmp) / "iid"
        (Path(tmp) / "config").mkdir()
        argv = [*builder.argv, "--progress=plain", "--iidfile", str(iidfile), "-f", str(dockerfile)]
        argv += [a for tag in tags for a in ("-t", f"{repository}:{tag}")]
        argv += [a for k, v in sorted(build_args.items()) for a in ("--build-arg", f"{k}={v}")]
        argv += [a for k, v in sorted(labels.items()) for a in ("--label", f"{k}={v}")]
        argv += (["--target", target] if target else []) + (["--network", network] if network else [])
        env = scrubbed_environment(tmp, {"DOCKER_HOST": engine.base_url, "DOCKER_CONFIG": str(Path(tmp) / "config"),
                                         **dict(builder.env)})
        last = [0.0]

        def progress(line: str) -> None:
            if re.match(r"^#\d+ \[", line) or "ERROR" in line or time.monotonic() - last[0] > _PROGRESS_EVERY_S:
                logger.info("%s", line)
                last[0] = time.monotonic()

        try:
            run([*argv, str(context)], env=env, isolated=True, timeout=3600, on_line=progress)
        except CommandFailed as exc:
            raise RemoteError(f"image build of {repository} on {engine.name} failed: {exc}") from exc
        return iidfile.read_text().strip()


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
    target: str | None = None,
    registry: ContainerRegistry | None = None,
) -> BuiltImage:
    """Build ``context`` into ``repository:tag`` for every tag, with OCI labels; the layer cache is used.

    ``context`` is a directory, or anything with a ``path`` attribute (a loaded artifact). Images the
    Dockerfile starts ``FROM`` are pulled first when the engine lacks them (from ``registry`` with its
    credentials when they are on it).

    Raises:
        InvalidInput: bad repository/tags, a missing Dockerfile or target stage, before the engine is touched.
        RemoteError: a base image cannot be had, or the build failed (the failing step's message is included).
    """
    validate_image_name(repository, tags)
    context = Path(getattr(context, "path", context))
    if not (context / dockerfile).is_file():
        raise InvalidInput(f"no {dockerfile} in build context {context}")
    logger = get_run_logger()
    text = (context / dockerfile).read_text()
    build_args = dict(build_args or {})
    all_labels = oci_labels(revision, source, labels)
    with_labels = insert_labels(text, all_labels, target)  # also checks FROM and the target stage
    builder = choose_builder(engine)
    client = engine.get_client()
    try:
        ensure_base_images(client, base_images(text, build_args, target), registry, logger)
        with tempfile.TemporaryDirectory(prefix="opsflow-dockerfile-") as tmp:
            generated = Path(tmp) / "Dockerfile"
            if builder.buildkit:
                frontend = syntax_image(text)
                if frontend and not _has_image(client, frontend):
                    # BuildKit would pull the frontend from its registry; a build server without that registry
                    # builds with the engine's own Dockerfile frontend instead.
                    logger.warning("%s: %s is not on the engine; building with the engine's built-in Dockerfile "
                                   "frontend", repository, frontend)
                    generated.write_text(without_syntax(text))
                else:
                    shutil.copyfile(context / dockerfile, generated)
                network = network_mode or (None if client.networks.list(names=["bridge"]) else "none")
                logger.info("building %s with %s", repository, builder.why)
                image_id = _cli_build(builder, engine, context, generated, repository, tags, build_args, all_labels,
                                      target, network, logger)
            else:
                # The labels go in as one LABEL instruction: the engine's `labels` option adds a build step (a
                # layer commit) per label. docker-py sends a Dockerfile from outside the context beside it,
                # excluded from COPY.
                generated.write_text(with_labels)
                logger.info("building %s with the engine's legacy builder (%s)", repository, builder.why)
                image_id = stream_build(client, context, f"{repository}:{tags[0]}", dockerfile=str(generated),
                                        build_args=build_args, network_mode=network_mode, logger=logger,
                                        where=f"{repository} on {engine.name}", target=target)
                image = client.images.get(image_id)
                for tag in tags[1:]:
                    image.tag(repository, tag)
    finally:
        client.close()
    logger.info("built %s (%s) tagged %s", repository, image_id[:19], ", ".join(tags))
    return BuiltImage(image_id=image_id, repository=repository, tags=list(tags), labels=all_labels)
