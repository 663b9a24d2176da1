"""The private container registry images are pushed to."""

from __future__ import annotations

from urllib.parse import urlsplit

from prefect.blocks.core import Block
from pydantic import Field, model_validator

from blocks.fields import Argv, HttpUrl, Secret


class ContainerRegistry(Block):
    """A Docker/OCI registry (CNCF distribution, Harbor, ...) and how to log in to it."""

    _block_type_name = "opsflow container registry"
    _block_type_slug = "opsflow-container-registry"
    _description = "A container registry: API URL, credentials and TLS settings."

    url: HttpUrl = Field(description="Registry API base URL, e.g. https://registry.lan or http://127.0.0.1:5000.")
    namespace: str = Field(
        default="",
        pattern=r"^([a-z0-9]+(?:[._-][a-z0-9]+)*)?(/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$",
        description="Optional repository prefix, e.g. 'team' gives registry/team/app.",
    )
    username: str | None = Field(default=None, description="User name; leave empty for an open registry.")
    password: Secret = Field(default=None, description="Password or token for the user.")
    verify_tls: bool = Field(default=True, description="Verify the registry's TLS certificate.")
    timeout: float = Field(default=30, gt=0, description="Seconds per registry API request.")
    gc_command: Argv | None = Field(
        default=None,
        description="Command (argv list) run on the worker after a cleanup deletes manifests: it must put the "
        "registry in maintenance (read-only or stopped), run `registry garbage-collect --delete-untagged <config>` "
        "and bring it back, e.g. ['sudo', '/usr/local/sbin/registry-gc']. Empty: no garbage collection.",
    )
    storage_root: str | None = Field(
        default=None, description="The registry's storage directory as the worker sees it, to report bytes freed.")

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
                           verify=self.verify_tls, timeout=self.timeout)

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
