"""Pushing built images to the registry through the engine, with the registry block's credentials and CA.

The engine verifies the registry's certificate itself, against the CAs in its ``certs.d`` directory
(``/etc/docker/certs.d/<host:port>/ca.crt``, Docker's documented place; read on every connection, no
restart). For an engine on this machine (a ``unix://`` socket) opsflow installs the block's ``ca_cert``
there before it pushes or pulls; for an engine elsewhere it cannot, and says where to put the file on
that host. (Docker treats registries on 127.0.0.0/8 as insecure and does not verify them at all.)
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from prefect import get_run_logger, task

from blocks import ContainerRegistry, DockerHostTarget
from opsflow.core.errors import OpsflowError, RemoteError, RemoteUnavailable, TransientError
from opsflow.core.redact import redact
from tasks.images.build import _PROGRESS_EVERY_S, BuiltImage
from tasks.images.tag import put_tags


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
_AUTH_WORDS = ("unauthorized", "authentication required", "denied", "incorrect username or password")
_TLS_WORDS = ("x509:", "certificate signed by unknown authority", "tls: failed to verify")


def certs_dir() -> Path:
    """Where the engine on this machine looks for registry CAs (``$OPSFLOW_DOCKER_CERTS_DIR`` for a
    rootless engine: ``~/.config/docker/certs.d``)."""
    return Path(os.environ.get("OPSFLOW_DOCKER_CERTS_DIR", "/etc/docker/certs.d"))


def _loopback(host: str) -> bool:
    name = urlsplit(f"//{host}").hostname or ""
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name == "localhost"


def trust_registry_ca(engine_url: str, engine_name: str, registry: ContainerRegistry,
                      logger: logging.Logger | logging.LoggerAdapter) -> Path | None:
    """Install the registry block's ``ca_cert`` as ``certs.d/<host>/ca.crt`` for an engine on this machine
    (``engine_url``: a block's ``base_url`` or an SDK client's ``api.base_url``).

    Returns the file (unchanged when it already holds the CA), or None when there is nothing to install or
    the engine is elsewhere (a warning then says what to put where on the engine's host).
    """
    if not registry.ca_cert or _loopback(registry.host):  # Docker verifies no registry on 127.0.0.0/8 or localhost
        return None
    target = certs_dir() / registry.host / "ca.crt"
    if not engine_url.startswith(("unix://", "http+docker://local")):
        logger.warning("engine %s (%s) is not on this machine: opsflow cannot install the registry's CA for it; put "
                       "the ca_cert of the registry block in %s on that host (Docker's certs.d), or pushes and pulls "
                       "of %s fail with 'x509: certificate signed by unknown authority'", engine_name,
                       engine_url, target, registry.host)
        return None
    try:
        if target.exists() and target.read_text() == registry.ca_cert:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name("ca.crt.tmp")
        tmp.write_text(registry.ca_cert)
        tmp.chmod(0o644)
        os.replace(tmp, target)
    except PermissionError:
        logger.warning("cannot write %s (permission denied): install the registry block's ca_cert there as root "
                       "for engine %s, or its pushes and pulls of %s fail TLS verification", target, engine_name,
                       registry.host)
        return None
    logger.info("installed the CA of %s for engine %s: %s", registry.host, engine_name, target)
    return target


def engine_refusal(detail: str, registry: ContainerRegistry) -> str:
    """What to do about an error the engine reported pushing to or pulling from ``registry``."""
    low = detail.lower()
    if any(w in low for w in _TLS_WORDS):
        return (f"the engine does not trust the TLS certificate of {registry.host}: set ca_cert on the "
                f"ContainerRegistry block and make sure {certs_dir() / registry.host / 'ca.crt'} holds it on the "
                "engine's host")
    if any(w in low for w in _AUTH_WORDS):
        who = f"user {registry.username!r}" if registry.username else "an anonymous client (no username on the block)"
        return (f"registry {registry.url} refused {who}: check username and password on the ContainerRegistry block "
                "(and that the user may push/pull this repository)")
    return ""


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
    """Push ``image`` under its first tag and return the digest the registry reported; its other tags are then
    put on that digest in the registry (:func:`tasks.images.tag.put_tags`: the manifest's own bytes under each
    tag, so every tag resolves to the same digest by construction; a second push through the engine asked the
    registry for every layer again).

    Errors in the push stream raise (the SDK reports them as data, not exceptions).
    """
    logger = get_run_logger()
    auth = registry.auth_config()
    secrets = [registry.password.get_secret_value()] if registry.password else []
    trust_registry_ca(engine.base_url, engine.name, registry, logger)
    client = engine.get_client()
    digests: dict[str, str] = {}
    try:
        for tag in image.tags[:1]:
            last_log = 0.0
            for chunk in client.api.push(image.repository, tag=tag, stream=True, decode=True, auth_config=auth):
                if "error" in chunk or "errorDetail" in chunk:
                    detail = redact(str(chunk.get("errorDetail", {}).get("message") or chunk.get("error")), secrets)
                    advice = engine_refusal(detail, registry)
                    transient = not advice and any(w in detail.lower() for w in _TRANSIENT_WORDS)
                    raise (RemoteUnavailable if transient else RemoteError)(
                        f"push of {image.repository}:{tag} to {registry.url} failed: {detail}"
                        + (f"; {advice}" if advice else ""))
                if "aux" in chunk and "Digest" in chunk["aux"]:
                    digests[tag] = chunk["aux"]["Digest"]
                elif time.monotonic() - last_log > _PROGRESS_EVERY_S and chunk.get("status"):
                    logger.info("push %s:%s: %s %s", image.repository, tag, chunk.get("status"),
                                chunk.get("progress", ""))
                    last_log = time.monotonic()
    finally:
        client.close()
    if set(digests) != set(image.tags[:1]):
        raise RemoteError(f"registry {registry.url} reported no digest for {image.repository}:{image.tags[0]}")
    digest = digests[image.tags[0]]
    put_tags(registry, image.repository, digest, image.tags[1:], logger)
    logger.info("pushed %s@%s (tags %s)", image.repository, digest, ", ".join(image.tags))
    return PushedImage(repository=image.repository, tags=list(image.tags), digest=digest)
