"""Base images opsflow builds itself, so no public registry is needed.

* ``busybox``: Debian's static busybox on scratch (a shell and ``httpd``).
* ``node``: the build server's own ``node`` binary with the shared libraries ``ldd`` lists,
  on top of the busybox image.

Each is tagged ``opsflow/base-<kind>:<hash>``, the hash covering the Dockerfile and every
file's content, so a base image is built once per engine and rebuilt when node changes. Hashing
node and its libraries (~100 MB) costs about a second in every new run process, so the tag is
remembered per stat fingerprint (path, size, mtime, inode of each file) in the build server's cache
directory: a run whose base image exists does one ``stat`` per file and one engine lookup.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

import docker.errors
from prefect import get_run_logger, task

from blocks import DockerHostTarget
from opsflow.core.errors import InvalidInput, OpsflowError
from opsflow.core.proc import run
from tasks.images.build import stream_build

BUSYBOX_DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""

NODE_DOCKERFILE_TAIL = """COPY rootfs/ /
RUN ["/bin/busybox", "mkdir", "-p", "-m", "1777", "/tmp"]
ENV PATH=/usr/local/bin:/usr/bin:/bin
"""
KINDS = ("busybox", "node")
_PT_INTERP = 3
_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def is_static_elf(path: Path) -> bool:
    """True for a 64-bit little-endian ELF executable without a dynamic loader (PT_INTERP)."""
    with open(path, "rb") as fh:
        head = fh.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return False
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != _PT_INTERP for i in range(phnum))


def find_static_busybox() -> Path:
    """The static busybox of Debian's busybox-static package (or another static one on PATH)."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox")):
        if candidate and Path(candidate).is_file() and is_static_elf(Path(candidate)):
            return Path(candidate)
    raise InvalidInput("no static busybox found: install it with `apt-get install busybox-static`")


@task(name="prepare-busybox-context", task_run_name="prepare-busybox-context")
def prepare_busybox_context(dockerfile_tail: str = "", files: dict[str, str] | None = None) -> Path:
    """A build context: static busybox on scratch, then ``dockerfile_tail`` and extra ``files``."""
    busybox = find_static_busybox()
    context = Path(tempfile.mkdtemp(prefix="opsflow-ctx-"))
    shutil.copy2(busybox, context / "busybox")
    (context / "Dockerfile").write_text(BUSYBOX_DOCKERFILE + dockerfile_tail)
    for name, content in (files or {}).items():
        target = (context / name).resolve()
        if context.resolve() not in target.parents:
            raise InvalidInput(f"context file {name!r} would be written outside the context")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return context


def shared_libraries(binary: Path) -> list[Path]:
    """The shared libraries (and the dynamic loader) ``ldd`` says ``binary`` needs."""
    output = run(["ldd", str(binary)], timeout=30)
    libs = []
    for line in output.splitlines():
        if "not found" in line:
            raise OpsflowError(f"{binary} needs a library that is missing: {line.strip()}")
        match = _LDD_LINE.match(line)
        if match:
            libs.append(Path(match.group(1)))
    return libs


def find_node() -> Path:
    """The build server's ``node`` binary (symlinks resolved)."""
    node = shutil.which("node")
    if not node:
        raise InvalidInput("no `node` on PATH: the node base image copies the build server's node; install Node.js")
    return Path(node).resolve()


def base_context_files(kind: str) -> tuple[str, dict[str, Path]]:
    """The Dockerfile text and the files (context path -> source path) of base image ``kind``."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown base image {kind!r}: opsflow builds {', '.join(KINDS)}")
    files = {"busybox": find_static_busybox()}
    if kind == "busybox":
        return BUSYBOX_DOCKERFILE, files
    node = find_node()
    files["rootfs/usr/local/bin/node"] = node
    for lib in shared_libraries(node):
        files["rootfs" + str(lib)] = lib.resolve()
    return BUSYBOX_DOCKERFILE + NODE_DOCKERFILE_TAIL, files


@functools.lru_cache(maxsize=64)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fingerprint(dockerfile: str, files: dict[str, Path]) -> str:
    parts = [dockerfile]
    for name, source in sorted(files.items()):
        st = source.stat()
        parts.append(f"{name}\0{source}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}")
    return hashlib.sha256("\0\0".join(parts).encode()).hexdigest()


def _tags_file() -> Path:
    from tasks.build.caches import default_root

    return default_root() / "base-image-tags.json"


def base_image_tag(kind: str) -> str:
    """``opsflow/base-<kind>:<12 hex>``: a hash of the Dockerfile and of every file's path and content
    (looked up by the files' stat fingerprint when this machine hashed them before)."""
    dockerfile, files = base_context_files(kind)
    fingerprint = _fingerprint(dockerfile, files)
    known: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(_tags_file().read_text())
    if fingerprint in known:
        return known[fingerprint]
    digest = hashlib.sha256(dockerfile.encode())
    for name, source in sorted(files.items()):
        st = source.stat()
        digest.update(f"\0{name}\0{_file_digest(source, st.st_size, st.st_mtime_ns)}".encode())
    tag = f"opsflow/base-{kind}:{digest.hexdigest()[:12]}"
    with contextlib.suppress(OSError):
        path = _tags_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(json.dumps({**dict(list(known.items())[-20:]), fingerprint: tag}))
        os.replace(temp, path)  # atomic: concurrent runs never read half a file
    return tag


@task(name="ensure-base-image", task_run_name="ensure-base-image-{kind}", retries=1, retry_delay_seconds=5)
def ensure_base_image(engine: DockerHostTarget, kind: str) -> str:
    """Make sure base image ``kind`` (busybox or node) is in ``engine``'s store; return its tag.

    Nothing is built when the tag is already there (the tag is a content hash).
    """
    logger = get_run_logger()
    tag = base_image_tag(kind)
    client = engine.get_client()
    try:
        try:
            client.images.get(tag)
            logger.info("base image %s is present on %s", tag, engine.name)
            return tag
        except docker.errors.ImageNotFound:
            pass
        dockerfile, files = base_context_files(kind)
        with tempfile.TemporaryDirectory(prefix="opsflow-base-") as tmp:
            context = Path(tmp)
            (context / "Dockerfile").write_text(dockerfile)
            for name, source in files.items():
                target = context / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
            stream_build(client, context, tag, labels={"dev.opsflow.base": kind}, logger=logger,
                         where=f"base image {tag} on {engine.name}")
    finally:
        client.close()
    logger.info("built base image %s on %s", tag, engine.name)
    return tag
