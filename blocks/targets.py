"""Where applications are deployed: a Kubernetes cluster, a Docker host (edge node), an SSH host."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from prefect.blocks.core import Block
from pydantic import AfterValidator, Field, model_validator

from blocks.fields import HostPath, Name, Secret, check_url
from blocks.schema import CachedJsonSchema


def _docker_url(value: str) -> str:
    if value.startswith("unix://"):
        if len(value) <= len("unix:///"):
            raise ValueError(f"{value!r} is not a valid Docker socket URL")
        return value
    return check_url(value, schemes=("tcp", "ssh", "http", "https"), allow_user=value.startswith("ssh://"))


DockerUrl = Annotated[str, AfterValidator(_docker_url)]


class KubernetesTarget(CachedJsonSchema, Block):
    """A namespace on a Kubernetes cluster, reached with a kubeconfig context or in-cluster."""

    _block_type_name = "opsflow kubernetes target"
    _block_type_slug = "opsflow-kubernetes-target"
    _description = "A Kubernetes cluster and namespace to deploy to."

    name: Name = Field(description="Short name shown in plans and run names, e.g. 'prod-k8s'.")
    namespace: Name = Field(default="default", description="Namespace applications are deployed into.")
    context: str | None = Field(default=None, description="kubeconfig context; the current one when empty.")
    kubeconfig_path: str | None = Field(
        default=None, description="kubeconfig file; $KUBECONFIG or ~/.kube/config when empty.")
    in_cluster: bool = Field(default=False, description="Use the pod's service account instead of a kubeconfig.")
    request_timeout: float = Field(default=30, gt=0, description="Seconds per Kubernetes API request.")
    ingress_class: Name | None = Field(default=None, description="IngressClass for Ingresses that name none, "
                                       "e.g. nginx or traefik; the cluster's default class when empty.")
    allowed_host_paths: list[HostPath] = Field(
        default_factory=list, description="Host directories pods may mount (hostPath volumes); none when empty.")

    def get_api_client(self):
        """A ``kubernetes.client.ApiClient`` for this cluster."""
        from kubernetes import client, config

        if self.in_cluster:
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)
            return client.ApiClient(cfg)
        return config.new_client_from_config(config_file=self.kubeconfig_path, context=self.context)


class DockerHostTarget(CachedJsonSchema, Block):
    """A Docker engine: an edge node running docker-compose style services, or the build server."""

    _block_type_name = "opsflow docker host"
    _block_type_slug = "opsflow-docker-host"
    _description = "A Docker engine reached over a socket, TCP with TLS, or SSH."

    name: Name = Field(description="Short name of the node, e.g. 'edge-1'. Its worker queue has the same name.")
    base_url: DockerUrl = Field(
        description="Engine URL: unix:///var/run/docker.sock, tcp://edge-1.lan:2376 or ssh://deploy@edge-1.lan."
    )
    tls_ca_cert: str | None = Field(default=None, description="CA certificate file for tcp:// with TLS.")
    tls_client_cert: str | None = Field(default=None, description="Client certificate file for tcp:// with TLS.")
    tls_client_key: str | None = Field(default=None, description="Client key file for tcp:// with TLS.")
    public_host: str = Field(default="127.0.0.1", description="Host name or address clients reach published ports on.")
    network_mode: Literal["bridge", "host"] = Field(
        default="bridge",
        description="bridge: containers publish their ports on the host (Docker's default; blue-green needs it). "
        "host: containers share the host's network (for engines started with --bridge=none).",
    )
    timeout: float = Field(default=120, gt=0, description="Seconds per engine API request.")
    allowed_host_paths: list[HostPath] = Field(
        default_factory=list, description="Host directories containers may mount (bind mounts must be inside one); "
        "none when empty (named volumes only).")
    compose_project: Name | None = Field(
        default=None, description="Deploy into this docker-compose project on the node instead of plain "
        "containers: the release sets its services' images, env and secrets, and `up -d` runs for them only.")
    compose_file: HostPath | None = Field(
        default=None, description="The project's compose file on the node (the worker runs there); empty: "
        "opsflow owns <compose_root>/<compose_project>/docker-compose.yml and writes the services itself.")
    compose_root: HostPath = Field(
        default="/var/lib/opsflow/compose", description="Where opsflow keeps compose projects it owns and the "
        "secret files of compose services (directories mode 0700, files 0600).")
    compose_command: list[str] | None = Field(
        default=None, description="Compose command, e.g. ['docker', 'compose'] or ['docker-compose']; empty: the "
        "`docker compose` plugin where present, else `docker-compose`.")

    @model_validator(mode="after")
    def _tls_complete(self) -> DockerHostTarget:
        given = [self.tls_client_cert, self.tls_client_key]
        if any(given) and not all(given):
            raise ValueError("tls_client_cert and tls_client_key must be given together")
        if self.compose_file and not self.compose_project:
            raise ValueError("compose_file needs compose_project (the project's name on the node)")
        return self

    def get_client(self):
        """A ``docker.DockerClient`` for this engine."""
        import docker

        tls = None
        if self.tls_client_cert or self.tls_ca_cert:
            tls = docker.tls.TLSConfig(
                client_cert=(self.tls_client_cert, self.tls_client_key) if self.tls_client_cert else None,
                ca_cert=self.tls_ca_cert,
                verify=bool(self.tls_ca_cert),
            )
        use_ssh_client = self.base_url.startswith("ssh://")
        # The SDK asks the engine for its API version with every new client (one more round trip per task, up to
        # 0.2 s on a busy engine); the version one client negotiated is reused by the next ones in this process.
        known = _API_VERSIONS.get(self.base_url)
        client = docker.DockerClient(base_url=self.base_url, tls=tls, timeout=int(self.timeout),
                                     use_ssh_client=use_ssh_client, version=known or "auto")
        if known is None:
            _API_VERSIONS[self.base_url] = client.api.api_version
        if self.base_url.startswith("unix://"):
            # No proxy stands before a socket; else requests reads the environment's proxy settings for every
            # call (5 % of a manual deploy's CPU in bench/deploy.py's profile).
            client.api.trust_env = False
        return client


#: The API version each engine (by ``base_url``) negotiated with the first client of this process.
_API_VERSIONS: dict[str, str] = {}


class HostOS(StrEnum):
    linux = "linux"
    windows = "windows"


class SshHostTarget(CachedJsonSchema, Block):
    """A Linux or Windows host deployed to by a generated script run over SSH."""

    _block_type_name = "opsflow ssh host"
    _block_type_slug = "opsflow-ssh-host"
    _description = "A host reached over SSH; deploys run a generated bash or PowerShell script."

    name: Name = Field(description="Short name of the host, e.g. 'app-1'.")
    hostname: str = Field(pattern=r"^[A-Za-z0-9.-]{1,253}$|^\[[0-9a-fA-F:]+\]$", description="DNS name or address.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    user: str = Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$", description="Login user.")
    os: HostOS = Field(default=HostOS.linux, description="Operating system: selects bash or PowerShell scripts.")
    private_key: Secret = Field(default=None, description="Private key (PEM/OpenSSH) for the user.")
    known_hosts: str | None = Field(default=None, description="known_hosts lines pinning the host key.")
    connect_timeout: float = Field(default=15, gt=0, description="Seconds to wait for the SSH connection.")
