"""Build artifacts in object storage: content-addressed, committed atomically, verified on load.

An artifact is ``<key>.tar.gz`` (the build output plus the component's Dockerfile and a
``.dockerignore`` keeping the Dockerfile out of the image: a ready image build context) and
``<key>.json`` (metadata). The metadata object is written last, so an artifact without it is
incomplete and is never loaded.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from prefect import get_run_logger, task

from blocks.application import Component
from blocks.object_store import ObjectStore
from opsflow.core.errors import ArtifactCorrupt, ArtifactNotFound, InvalidInput, RemoteError
from tasks.build import BuildResult
from tasks.git import Checkout
from tasks.images.build import base_images, uses_arg

FORMAT = 3
# Keeps the Dockerfile itself out of the image (``COPY . /dest`` would copy it otherwise).
DOCKERIGNORE = b"Dockerfile\n.dockerignore\n"


@dataclass(frozen=True)
class ArtifactPlan:
    """Where a component's artifact for one source tree lives, and whether it is already stored."""

    app: str
    component: str
    key: str
    tree: str
    exists: bool
    metadata: dict[str, Any] | None = None

    @property
    def archive_key(self) -> str:
        return f"{self.key}.tar.gz"

    @property
    def meta_key(self) -> str:
        return f"{self.key}.json"


@dataclass(frozen=True)
class ArtifactRef:
    """A stored artifact: its key, checksum and size, and whether this run uploaded it."""

    key: str
    digest: str
    size: int
    uploaded: bool
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedArtifact:
    """An artifact unpacked on disk, ready to be an image build context."""

    key: str
    path: Path
    digest: str
    metadata: dict[str, Any]


def build_inputs(app: str, component: Component, tree: str) -> dict[str, Any]:
    """Everything that determines a component's build output, besides the toolchain."""
    spec = component.model_dump(mode="json", include={"name", "path", "build_commands", "build_output", "dockerfile",
                                                      "install", "install_command", "packaging",
                                                      "runtime_dependencies"})
    return {"format": FORMAT, "app": app, "component": spec, "tree": tree}


def artifact_key(app: str, component: Component, tree: str) -> str:
    """``<app>/<component>/<sha256 of the build inputs>``: the same tree and recipe give the same key."""
    inputs = json.dumps(build_inputs(app, component, tree), sort_keys=True, separators=(",", ":"))
    return f"{app}/{component.name}/{hashlib.sha256(inputs.encode()).hexdigest()[:40]}"


def _remote(store: ObjectStore, what: str, exc: Exception) -> RemoteError:
    code = exc.response["Error"].get("Code") if isinstance(exc, ClientError) else type(exc).__name__
    return RemoteError(f"object store {store.endpoint_url} (bucket {store.bucket}): {what} failed: {code}; "
                       "check that the store is up and the credentials in the block are right")


def read_metadata(store: ObjectStore, client, key: str) -> dict[str, Any] | None:
    try:
        body = client.get_object(Bucket=store.bucket, Key=f"{key}.json")["Body"].read()
    except ClientError as exc:
        if exc.response["Error"].get("Code") in ("NoSuchKey", "404"):
            return None
        raise _remote(store, f"reading {key}.json", exc) from exc
    except BotoCoreError as exc:
        raise _remote(store, f"reading {key}.json", exc) from exc
    return json.loads(body)


def read_plan(store: ObjectStore, checkout: Checkout, app: str, component: Component) -> ArtifactPlan:
    """Compute the component's artifact key from its source tree and see whether it is stored (a plain call:
    the pipelines read their plans side by side in threads, no task run each; the read is retried by the
    store's client within its timeouts)."""
    tree = checkout.tree_id(component.path)
    key = artifact_key(app, component, tree)
    metadata = read_metadata(store, store.get_client(), key)
    return ArtifactPlan(app=app, component=component.name, key=key, tree=tree, exists=metadata is not None,
                        metadata=metadata)


def layout_entries(layout: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """Every file, directory and (inside) symlink of a layout with its archive name, sorted; no name twice."""
    entries: dict[str, Path] = {}
    for source, raw_prefix in layout:
        prefix = raw_prefix.strip("/")
        if source.is_file():
            items = [(source, prefix)]
        else:
            items = [(source, prefix)] if prefix else []
            root = source.resolve()
            items += [(p, f"{prefix}/{p.relative_to(source).as_posix()}".lstrip("/")) for p in source.rglob("*")
                      if not p.is_symlink() or p.resolve().is_relative_to(root)]
        for path, name in items:
            if name in entries and not (path.is_dir() and entries[name].is_dir()):
                raise InvalidInput(f"the artifact would hold {name!r} twice ({entries[name]} and {path})")
            entries.setdefault(name, path)
    return [(entries[name], name) for name in sorted(entries)]


def pack(source: Path | list[tuple[Path, str]], dockerfile: Path, dest: Path) -> tuple[str, int]:
    """A reproducible tar.gz of ``source`` (a directory, or a layout of ``(path, archive path)``) with
    ``dockerfile`` as ``Dockerfile`` at its root."""
    layout = [(source, "")] if isinstance(source, Path) else source
    for reserved in ("Dockerfile", ".dockerignore"):
        clash = [p for p, prefix in layout if not prefix and p.is_dir() and (p / reserved).exists()]
        if clash:
            raise InvalidInput(f"the build output {clash[0]} already has a {reserved}; it would be overwritten")
    if not dockerfile.is_file():
        raise InvalidInput(f"Dockerfile {dockerfile} does not exist")
    entries = layout_entries(layout)
    with open(dest, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        ignore = tarfile.TarInfo(".dockerignore")
        ignore.size, ignore.mode = len(DOCKERIGNORE), 0o644
        tar.addfile(ignore, io.BytesIO(DOCKERIGNORE))
        for path, name in [(dockerfile, "Dockerfile"), *entries]:
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if (info.isdir() or info.mode & 0o111) else 0o644
            if info.isfile():
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    digest = hashlib.sha256()
    with open(dest, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}", dest.stat().st_size


def _remote_failure(task, task_run, state) -> bool:
    """Retry a save that failed on the object store, not one refused for its content."""
    return isinstance(state.result(raise_on_failure=False), RemoteError)


@task(name="save-artifact", task_run_name="save-artifact-{plan.component}", retries=3,
      retry_delay_seconds=[2, 5, 15], retry_condition_fn=_remote_failure)
def save_artifact(store: ObjectStore, plan: ArtifactPlan, build: BuildResult, component: Component,
                  checkout: Checkout, extra_metadata: dict[str, Any] | None = None) -> ArtifactRef:
    """Store the build output (and Dockerfile) under the plan's key; skip the upload when it is there.

    The archive goes to a temporary key first, is copied to its final key, and the metadata
    is written last: nothing partial is ever visible under the key.
    """
    logger = get_run_logger()
    client = store.get_client()
    existing = read_metadata(store, client, plan.key)
    if existing is not None:
        logger.info("artifact %s is already stored (%s); upload skipped", plan.key, existing["digest"])
        return ArtifactRef(key=plan.key, digest=existing["digest"], size=existing["size"], uploaded=False,
                           metadata=existing)
    with tempfile.TemporaryDirectory(prefix="opsflow-pack-") as tmp:
        archive = Path(tmp) / "artifact.tar.gz"
        dockerfile = build.component_dir / component.dockerfile
        digest, size = pack(build.layout or build.output_dir, dockerfile, archive)
        text = dockerfile.read_text()
        metadata = {
            "format": FORMAT, "key": plan.key, "app": plan.app, "component": plan.component, "tree": plan.tree,
            "commit": checkout.sha, "repository": checkout.repository, "digest": digest, "size": size,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "build_inputs": build_inputs(plan.app, component, plan.tree), "tests": None,
            "image": {"base_image_arg": uses_arg(text, "BASE_IMAGE"), "from": base_images(text)},
            **(extra_metadata or {}),
        }
        temp_key = f"tmp/{uuid.uuid4().hex}.tar.gz"
        try:
            client.upload_file(str(archive), store.bucket, temp_key,
                               ExtraArgs={"Metadata": {"sha256": digest.split(":", 1)[1]}})
            client.copy_object(Bucket=store.bucket, Key=plan.archive_key,
                               CopySource={"Bucket": store.bucket, "Key": temp_key})
            client.put_object(Bucket=store.bucket, Key=plan.meta_key, Body=json.dumps(metadata, indent=2).encode(),
                              ContentType="application/json")
        except (ClientError, BotoCoreError) as exc:
            raise _remote(store, f"uploading {plan.key}", exc) from exc
        finally:
            try:
                client.delete_object(Bucket=store.bucket, Key=temp_key)
            except (ClientError, BotoCoreError):
                logger.warning("could not remove temporary object %s", temp_key)
    logger.info("stored artifact %s (%s, %d bytes)", plan.key, digest, size)
    return ArtifactRef(key=plan.key, digest=digest, size=size, uploaded=True, metadata=metadata)


def _record_run_name() -> str:
    """``record-test-results-<component>``: artifact keys are ``<app>/<component>/<tree>``."""
    from prefect.runtime import task_run

    parts = str(task_run.parameters.get("key", "")).split("/")
    return f"record-test-results-{parts[1] if len(parts) == 3 else parts[-1]}"


@task(name="record-test-results", task_run_name=_record_run_name, retries=2, retry_delay_seconds=[2, 8])
def record_test_results(store: ObjectStore, key: str, tests: dict[str, Any]) -> dict[str, Any]:
    """Write a test summary into the artifact's metadata (the archive is untouched)."""
    client = store.get_client()
    metadata = read_metadata(store, client, key)
    if metadata is None:
        raise ArtifactNotFound(f"no artifact metadata at {key}.json in bucket {store.bucket}")
    metadata["tests"] = tests
    try:
        client.put_object(Bucket=store.bucket, Key=f"{key}.json", Body=json.dumps(metadata, indent=2).encode(),
                          ContentType="application/json")
    except (ClientError, BotoCoreError) as exc:
        raise _remote(store, f"updating {key}.json", exc) from exc
    return metadata


_STREAM_CLIENTS: dict[int, Any] = {}


def _stream_client(store: ObjectStore):
    """The store's client without botocore's response checksum check: the download is verified against the
    artifact's own sha256 instead (botocore compares a whole-object checksum with the composite one of a
    multipart upload copied into place, and fails archives over the multipart threshold)."""
    from botocore.config import Config

    client = store.get_client()
    if id(client) not in _STREAM_CLIENTS:
        import boto3

        kwargs = store.client_kwargs()
        kwargs["config"] = kwargs["config"].merge(Config(response_checksum_validation="when_required"))
        _STREAM_CLIENTS[id(client)] = boto3.session.Session().client("s3", **kwargs)
    return _STREAM_CLIENTS[id(client)]


class _Hashing(io.RawIOBase):
    """A read-only stream that hashes what passes through it (the download, read once)."""

    def __init__(self, body):
        self._body, self.digest, self.size = body, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._body.read(len(buffer))
        self.digest.update(chunk)
        self.size += len(chunk)
        buffer[:len(chunk)] = chunk
        return len(chunk)


def _drain(stream: _Hashing) -> None:
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        del chunk


@task(name="load-artifact", task_run_name="load-artifact-{key}", retries=3, retry_delay_seconds=[2, 5, 15],
      retry_condition_fn=lambda t, r, s: isinstance(s.result(raise_on_failure=False), RemoteError))
def load_artifact(store: ObjectStore, key: str, dest: Path | None = None) -> LoadedArtifact:
    """Download the artifact at ``key`` and unpack it into ``dest`` in one pass, verifying its checksum.

    The archive is streamed from the object store through sha256 into the unpacker (no temporary
    file, read once); a checksum that differs from the metadata's removes what was unpacked.

    Raises:
        ArtifactNotFound: nothing complete is stored under the key (the key is named).
        ArtifactCorrupt: the archive's sha256 differs from the metadata's.
    """
    logger = get_run_logger()
    client = store.get_client()
    metadata = read_metadata(store, client, key)
    if metadata is None:
        raise ArtifactNotFound(f"no artifact is stored under {key} in bucket {store.bucket}; run the pull request "
                               "pipeline for this commit first, or ask the merge pipeline to build")
    dest = Path(dest) if dest else Path(tempfile.mkdtemp(prefix="opsflow-artifact-"))
    dest.mkdir(parents=True, exist_ok=True)
    try:
        body = _stream_client(store).get_object(Bucket=store.bucket, Key=f"{key}.tar.gz")["Body"]
        stream = _Hashing(body)
        with tarfile.open(fileobj=io.BufferedReader(stream, 1 << 20), mode="r|gz") as tar:
            tar.extractall(dest, filter="data")
        _drain(stream)
    except (ClientError, BotoCoreError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise _remote(store, f"downloading {key}.tar.gz", exc) from exc
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise ArtifactCorrupt(f"artifact {key} is corrupt: it could not be unpacked ({type(exc).__name__}: {exc}); "
                              "re-run the pull request pipeline to store it again") from exc
    actual = f"sha256:{stream.digest.hexdigest()}"
    if actual != metadata["digest"]:
        shutil.rmtree(dest, ignore_errors=True)
        raise ArtifactCorrupt(f"artifact {key} is corrupt: its sha256 is {actual}, the metadata says "
                              f"{metadata['digest']}; re-run the pull request pipeline to store it again")
    logger.info("loaded artifact %s (%s, %d bytes) into %s", key, metadata["digest"], stream.size, dest)
    return LoadedArtifact(key=key, path=dest, digest=metadata["digest"], metadata=metadata)
