"""Prefect Block classes holding opsflow's configuration.

Register them with ``prefect block register -m blocks``. Importing this package has no
side effects beyond defining the classes.
"""

from blocks.application import Application, Component, DeployDefaults, DeployMethod, EnvFile, HealthCheck
from blocks.cleanup_policy import CleanupRule, RegistryCleanupPolicy
from blocks.forge import ForgeKind, GitForge
from blocks.mlflow_server import MlflowServer
from blocks.object_store import ObjectStore
from blocks.registry import ContainerRegistry
from blocks.targets import DockerHostTarget, HostOS, KubernetesTarget, SshHostTarget

BLOCK_CLASSES = (
    Application,
    ContainerRegistry,
    DockerHostTarget,
    GitForge,
    KubernetesTarget,
    MlflowServer,
    ObjectStore,
    RegistryCleanupPolicy,
    SshHostTarget,
)

__all__ = [
    "BLOCK_CLASSES",
    "Application",
    "CleanupRule",
    "Component",
    "ContainerRegistry",
    "DeployDefaults",
    "DeployMethod",
    "DockerHostTarget",
    "EnvFile",
    "ForgeKind",
    "GitForge",
    "HealthCheck",
    "HostOS",
    "KubernetesTarget",
    "MlflowServer",
    "ObjectStore",
    "RegistryCleanupPolicy",
    "SshHostTarget",
]
