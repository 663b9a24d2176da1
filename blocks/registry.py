"""The private container registry images are pushed to."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from prefect.blocks.core import Block
from pydantic import Field, field_validator, model_validator

from blocks.fields import Argv, HttpUrl, PemCertificates, Secret
from blocks.schema import CachedJsonSchema

# distribution 2.8's `garbage-collect --delete-untagged` deletes the untagged platform manifests of a kept
# image index (a known upstream problem with manifest lists): opsflow deletes those itself, by digest.
_UNSAFE_GC_FLAGS = ("--delete-untagged", "-m")


class ContainerRegistry(CachedJsonSchema, Block):
    """A Docker/OCI registry (CNCF distribution, Harbor, ...) and how to log in to it.

    opsflow logs in as ``docker login`` does: HTTP Basic, or the Docker token flow (Harbor, GitLab's
    registry, distribution with ``auth: token``), with tokens cached per scope until they expire. A registry
    whose certificate a private CA signed needs that CA in ``ca_cert``: opsflow's own calls verify with it,
    and it is installed for the Docker engine opsflow pushes and pulls with
    (``/etc/docker/certs.d/<host>/ca.crt``).
    """

    _block_type_name = "opsflow container registry"
    _block_type_slug = "opsflow-container-registry"
    _description = "A container registry: API URL, credentials and TLS settings."

    url: HttpUrl = Field(description="Registry API base URL, e.g. https://registry.lan or http://127.0.0.1:5000.")
    namespace: str = Field(
        default="",
        pattern=r"^([a-z0-9]+(?:[._-][a-z0-9]+)*)?(/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$",
        description="Optional repository prefix, e.g. 'team' gives registry/team/app.",
    )
    kind: Literal["distribution", "harbor"] = Field(
        default="distribution",
        description="distribution: CNCF distribution, GitLab's registry and the like. harbor: Harbor, whose "
        "projects/repositories API lists the repositories registry cleanup looks at (robot accounts may not "
        "list /v2/_catalog).")
    username: str | None = Field(default=None, description="User name (a Harbor robot account works); leave empty "
                                 "for an open registry.")
    password: Secret = Field(default=None, description="Password or token for the user.")
    ca_cert: PemCertificates = Field(
        default=None,
        description="PEM of the CA that signed the registry's TLS certificate, for a private CA (one or more "
        "certificates). Used by opsflow's registry calls and installed for the Docker engine that pushes and pulls.")
    verify_tls: bool = Field(
        default=True, description="Verify the registry's TLS certificate. Leave on: for a private CA set ca_cert.")
    harbor_api_url: HttpUrl | None = Field(
        default=None, description="Harbor's API base when it is not the registry URL, e.g. https://harbor.lan.")
    timeout: float = Field(default=30, gt=0, description="Seconds per registry API request.")
    gc_command: Argv | None = Field(
        default=None,
        description="Command (argv list) run on the worker after a cleanup deletes manifests: it must put the "
        "registry in maintenance (read-only or stopped), run `registry garbage-collect <config>` (never "
        "--delete-untagged: it deletes the platform manifests of kept multi-arch images; the cleanup deletes "
        "what it removes by digest itself) and bring it back, e.g. ['sudo', '/usr/local/sbin/registry-gc']. "
        "Empty: no garbage collection.",
    )
    storage_root: str | None = Field(
        default=None, description="The registry's storage directory as the worker sees it, to report bytes freed.")

    @field_validator("gc_command")
    @classmethod
    def _safe_gc(cls, value: list[str] | None) -> list[str] | None:
        unsafe = [arg for arg in value or [] if arg in _UNSAFE_GC_FLAGS or arg.startswith("--delete-untagged=")]
        if unsafe:
            raise ValueError(f"{unsafe[0]} deletes the untagged platform manifests of kept multi-arch images "
                             "(distribution 2.8); run `registry garbage-collect <config>` without it")
        return value

    @model_validator(mode="after")
    def _credentials_pair(self) -> ContainerRegistry:
        if bool(self.username) != bool(self.password):
            raise ValueError("username and password must be given together")
        return self

    @property
    def host(self) -> str:
        """``host[:port]`` as it appears in image references."""
        return urlsplit(self.url).netloc

    def repository(self, name: str) -> str:
        """Full repository reference for an image name, e.g. ``127.0.0.1:5000/team/app``."""
        prefix = f"{self.namespace}/" if self.namespace else ""
        return f"{self.host}/{prefix}{name}"

    def get_client(self):
        """An ``httpx.Client`` on the registry's v2 API with this block's credentials and TLS settings."""
        from opsflow.registry.v2 import open_client  # not at the top: blocks load no HTTP client library

        return open_client(self.url, self.username, self.password.get_secret_value() if self.password else None,
                           verify=self.verify_tls, timeout=self.timeout, ca_cert=self.ca_cert)

    def get_harbor_client(self):
        """An ``httpx.Client`` on Harbor's API (``/api/v2.0``) with this block's credentials (Basic) and CA."""
        from opsflow.registry.harbor import open_harbor_client

        return open_harbor_client(self.harbor_api_url or self.url, self.username,
                                  self.password.get_secret_value() if self.password else None,
                                  ca_cert=self.ca_cert, verify=self.verify_tls, timeout=self.timeout)

    def auth_config(self) -> dict[str, str] | None:
        """The Docker SDK ``auth_config`` for pushes, or None for an open registry."""
        if not self.username or self.password is None:
            return None
        return {"username": self.username, "password": self.password.get_secret_value()}

    def docker_credentials(self):
        """The same login as a prefect-docker ``DockerRegistryCredentials`` block, or None."""
        if not self.username or self.password is None:
            return None
        from prefect_docker.credentials import DockerRegistryCredentials

        return DockerRegistryCredentials(username=self.username, password=self.password, registry_url=self.host)
