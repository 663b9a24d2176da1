"""A minimal base image opsflow builds itself (no public registry is needed): busybox on scratch."""

from __future__ import annotations

import shutil
import struct
import tempfile
from pathlib import Path

from prefect import task

from opsflow.errors import InvalidInput

BUSYBOX_DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""

_PT_INTERP = 3


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


@task(name="prepare-busybox-context")
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
