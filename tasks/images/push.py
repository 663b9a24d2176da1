"""Pushing built images to the registry through the engine, with the registry block's credentials."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prefect import get_run_logger, task

from blocks import ContainerRegistry, DockerHostTarget
from opsflow.core.errors import OpsflowError, RemoteError, RemoteUnavailable, TransientError
from opsflow.core.redact import redact
from tasks.images.build import _PROGRESS_EVERY_S, BuiltImage


@dataclass(frozen=True)
class PushedImage:
    """An image in the registry: the digest the registry reported and the tags pushed."""

    repository: str
    tags: list[str]
    digest: str

    @property
    def ref(self) -> str:
        """The immutable reference ``repository@sha256:...``."""
        return f"{self.repository}@{self.digest}"



# What the engine's push stream says when the network, not the registry, failed the push.
_TRANSIENT_WORDS = ("timeout", "connection", "eof", "reset", "unavailable")


def _is_transient(task, task_run, state) -> bool:
    """Retry pushes that failed on the network, not ones the registry refused."""
    try:
        state.result()
    except TransientError:
        return True
    except OpsflowError:
        return False
    except Exception:  # noqa: BLE001 - the SDK's connection errors and the like
        return True
    return False


# A template, not a callable: Prefect resolves the ``image`` future before formatting it.
@task(name="push-image", task_run_name="push-image-{image.name}", retries=3,
      retry_delay_seconds=[2, 5, 15], retry_condition_fn=_is_transient)
def push_image(engine: DockerHostTarget, registry: ContainerRegistry, image: BuiltImage) -> PushedImage:
    """Push every tag of ``image`` and return the digest the registry reported.

    Errors in the push stream raise (the SDK reports them as data, not exceptions).
    Every tag must resolve to the same digest.
    """
    logger = get_run_logger()
    auth = registry.auth_config()
    secrets = [registry.password.get_secret_value()] if registry.password else []
    client = engine.get_client()
    digests: dict[str, str] = {}
    try:
        for tag in image.tags:
            last_log = 0.0
            for chunk in client.api.push(image.repository, tag=tag, stream=True, decode=True, auth_config=auth):
                if "error" in chunk or "errorDetail" in chunk:
                    detail = redact(str(chunk.get("errorDetail", {}).get("message") or chunk.get("error")), secrets)
                    transient = any(w in detail.lower() for w in _TRANSIENT_WORDS)
                    raise (RemoteUnavailable if transient else RemoteError)(
                        f"push of {image.repository}:{tag} to {registry.url} failed: {detail}")
                if "aux" in chunk and "Digest" in chunk["aux"]:
                    digests[tag] = chunk["aux"]["Digest"]
                elif time.monotonic() - last_log > _PROGRESS_EVERY_S and chunk.get("status"):
                    logger.info("push %s:%s: %s %s", image.repository, tag, chunk.get("status"),
                                chunk.get("progress", ""))
                    last_log = time.monotonic()
    finally:
        client.close()
    if set(digests) != set(image.tags):
        missing = sorted(set(image.tags) - set(digests))
        raise RemoteError(f"registry {registry.url} reported no digest for tag(s) {missing}")
    if len(set(digests.values())) != 1:
        raise RemoteError(f"tags of {image.repository} were pushed with different digests: {digests}")
    digest = next(iter(digests.values()))
    logger.info("pushed %s@%s (tags %s)", image.repository, digest, ", ".join(image.tags))
    return PushedImage(repository=image.repository, tags=list(image.tags), digest=digest)
