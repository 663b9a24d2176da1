"""Writing the build server's env/secret files into a checkout (mode 0600, never logged)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from prefect import get_run_logger, task
from prefect.blocks.system import Secret

from blocks.application import EnvFile
from opsflow.core.errors import InvalidInput
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


def secret_values(text: str) -> list[str]:
    """The values of KEY=VALUE lines (and the whole text): what must be redacted from build output."""
    values = [text.strip()]
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            values.append(line.split("=", 1)[1].strip().strip("'\""))
    return [v for v in values if v]


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


def redaction_list(checkout: Checkout, written: EnvFilesWritten) -> list[str]:
    """Secret values found in the env files written to ``checkout``."""
    values: list[str] = []
    for rel in written.paths:
        values.extend(secret_values((checkout.path / rel).read_text()))
    return values
