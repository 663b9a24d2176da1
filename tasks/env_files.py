"""Writing the build server's env/secret files into a checkout (mode 0600, never logged).

What must be masked in everything a build prints is every value of the file as any tool could read
it: ``sh`` sourcing it (``KEY=value # comment`` gives ``value``; quotes removed; a quoted value may
span lines), Docker's ``--env-file`` (the rest of the line, as is) and ``dotenv`` (``\\n`` in double
quotes is a line break). Values of public keys (``PUBLIC_*`` by default: they are baked into the build
output on purpose) and the application's names are not masked. A file that is not ``KEY=VALUE`` lines
(a JSON key, a PEM certificate) is secret as a whole and line by line.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from prefect import get_run_logger, task
from prefect.blocks.system import Secret

from blocks.application import DEFAULT_PUBLIC_KEYS, EnvFile
from opsflow.core.errors import InvalidInput
from opsflow.core.redact import register
from tasks.git import Checkout


@dataclass(frozen=True)
class EnvFilesWritten:
    """Which files were written, with a sha256 of each content (the content itself is never returned)."""

    paths: list[str]
    digests: dict[str, str] = field(default_factory=dict)


def secret_text(secret: Secret) -> str:
    value = secret.get()
    if isinstance(value, (dict, list)):
        raise InvalidInput("an env file secret must hold the file's text, not JSON")
    return str(value)


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=(.*)$")


def _shell_reading(text: str) -> list[tuple[str, str]] | None:
    """``(key, value)`` as ``sh`` would assign them, or None when the text is not assignments."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        words = list(lexer)
    except ValueError:  # an unterminated quote: sh would refuse the file too
        return None
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        if word == "export":
            continue
        if not sep or not _KEY.match(key):
            return None
        pairs.append((key, value))
    return pairs


def _line_readings(text: str) -> list[tuple[str, str]]:
    """``(key, value)`` as line-based readers see them: the raw rest of the line, unquoted, comment cut."""
    pairs = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        key, raw = match.group(1), match.group(2)
        readings = {raw, raw.strip(), raw.strip().strip("'\""), raw.split(" #", 1)[0].strip().strip("'\"")}
        if raw.strip().startswith('"'):
            readings.add(raw.strip().strip('"').replace("\\n", "\n"))
        pairs += [(key, r) for r in readings if r]
    return pairs


def env_pairs(text: str) -> list[tuple[str, str]] | None:
    """Every ``(key, value)`` any reader of an env file would see, or None when ``text`` is not an env file."""
    shell = _shell_reading(text)
    lines = _line_readings(text)
    if shell is None and not lines:
        return None
    return (shell or []) + lines


def is_public(key: str, public_keys: Iterable[str]) -> bool:
    """Whether ``key`` matches one of the public key patterns (``fnmatch`` globs, case-sensitive)."""
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in public_keys)


def secret_values(text: str, public_keys: Iterable[str] = DEFAULT_PUBLIC_KEYS,
                  public_values: Iterable[str] = ()) -> list[str]:
    """What must be masked in anything a build prints: every non-public value in every reading.

    A multi-line value is also masked line by line (``opsflow.core.redact.variants``).
    """
    public_keys, public_values = list(public_keys), {v for v in public_values if v}
    pairs = env_pairs(text)
    if pairs is None:  # not KEY=VALUE lines: the whole file is the secret
        return [text] if text.strip() else []
    values = {value for key, value in pairs if not is_public(key, public_keys)}
    for value in list(values):
        values |= {line.strip() for line in value.splitlines()}
    return sorted(v for v in values if v and v.strip() and v.strip() not in public_values)


@task(name="fetch-env-files", task_run_name="fetch-env-files")
def fetch_env_files(checkout: Checkout, env_files: list[EnvFile], secrets: dict[str, Secret]) -> EnvFilesWritten:
    """Write each env file from its Prefect Secret block into the checkout, mode 0600.

    Args:
        checkout: the working tree to write into.
        env_files: which secret goes to which relative path.
        secrets: the loaded Secret blocks by block name (values stay ``SecretStr`` until written).
    Raises:
        InvalidInput: a path escaping the checkout or a secret block that was not provided.
    """
    logger = get_run_logger()
    root = checkout.path.resolve()
    written: list[str] = []
    digests: dict[str, str] = {}
    for env_file in env_files:
        target = (root / env_file.path).resolve()
        if root not in target.parents:
            raise InvalidInput(f"env file path {env_file.path!r} escapes the checkout")
        if env_file.secret_block not in secrets:
            raise InvalidInput(f"no Secret block {env_file.secret_block!r} was provided for {env_file.path}")
        text = secret_text(secrets[env_file.secret_block])
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.unlink()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")
        written.append(env_file.path)
        digests[env_file.path] = hashlib.sha256(text.encode()).hexdigest()
        logger.info("wrote env file %s (%d bytes, mode 0600)", env_file.path, len(text))
    return EnvFilesWritten(paths=written, digests=digests)


def redaction_list(checkout: Checkout, written: EnvFilesWritten, env_files: list[EnvFile] | None = None,
                   public_values: Iterable[str] = ()) -> list[str]:
    """Secret values found in the env files written to ``checkout`` (registered for this process's redaction).

    Args:
        checkout: where the files were written.
        written: what :func:`fetch_env_files` wrote.
        env_files: their declarations (for each file's ``public_keys``); the default patterns otherwise.
        public_values: names that are never masked (the application's and its components').
    """
    public = {e.path: e.public_keys for e in env_files or []}
    values: list[str] = []
    for rel in written.paths:
        values.extend(secret_values((checkout.path / rel).read_text(), public.get(rel, DEFAULT_PUBLIC_KEYS),
                                    public_values))
    register(values)
    return values
