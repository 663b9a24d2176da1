"""An application's definition: where its code is, how to build, test, package and deploy it."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, field_validator, model_validator

from blocks import names
from blocks.fields import Argv, Branch, Cpu, ForgeRepo, HttpPath, Label, Memory, Name, RelativePath


class DeployMethod(StrEnum):
    rolling = "rolling"
    blue_green = "blue-green"


class UntrustedPullRequests(StrEnum):
    """What a pull request from a fork, or by an author without write access, does."""

    hold = "hold"
    run_without_secrets = "run-without-secrets"


class HealthCheck(BaseModel):
    """How to tell a running instance is healthy."""

    path: HttpPath = Field(default="/healthz", description="HTTP path probed on the first port.")
    timeout_s: float = Field(default=2, gt=0, le=60, description="Seconds per probe.")
    deadline_s: float = Field(default=60, gt=0, le=3600, description="Seconds a new version has to become healthy.")


class DeployDefaults(BaseModel):
    """Defaults the manual deploy form starts from."""

    replicas: int = Field(default=1, ge=0, le=100, description="Instances to run.")
    cpu: Cpu = Field(default="250m", description="CPU per instance (Kubernetes quantity).")
    memory: Memory = Field(default="256Mi", description="Memory per instance (Kubernetes quantity).")
    method: DeployMethod = Field(default=DeployMethod.rolling, description="Rollout method.")


class EnvFile(BaseModel):
    """A file of environment values or secrets the build server provides to the build."""

    secret_block: Name = Field(description="Name of the Prefect Secret block holding the file's content.")
    path: RelativePath = Field(
        description="Where the file is written in the checkout (mode 0600), e.g. 'backend/.env'.")


class Component(BaseModel):
    """One buildable part of an application (e.g. backend, frontend), with its own artifact and image."""

    name: Name = Field(description="Component name; also the image name suffix, e.g. 'backend'.")
    path: RelativePath = Field(default=".", description="Directory of the component in the repository.")
    build_commands: list[Argv] = Field(
        default_factory=list, description="Build/transpile commands, each an argv list run in the component directory."
    )
    build_output: RelativePath = Field(
        default="dist", description="Directory (relative to the component) the build produces; stored as the artifact."
    )
    test_command: Argv | None = Field(default=None, description="Test command as an argv list, run after the build.")
    junit_report: RelativePath | None = Field(
        default=None, description="JUnit XML report the test command writes, relative to the component."
    )
    dockerfile: RelativePath = Field(
        default="Dockerfile",
        description="Dockerfile relative to the component; built with the build output as context."
    )
    base_image: str = Field(
        default="opsflow:busybox",
        pattern=r"^(opsflow:(busybox|node)|[a-z0-9][a-z0-9._/:@-]{0,254})$",
        description="Image passed to the Dockerfile as build arg BASE_IMAGE: 'opsflow:busybox' or 'opsflow:node' "
        "(base images opsflow builds itself, no public registry needed) or any image reference.",
    )
    ports: list[int] = Field(default_factory=list, description="Container ports the component listens on.")
    health_check: HealthCheck | None = Field(default=None, description="Health check of a running instance.")

    @field_validator("ports")
    @classmethod
    def _ports_valid(cls, ports: list[int]) -> list[int]:
        bad = [p for p in ports if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"ports out of range 1-65535: {bad}")
        return ports


_REPO_RE = re.compile(r"^(https?|ssh|git|file)://[^\s@]*[^\s/]$|^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")


class Application(Block):
    """An application opsflow builds, tests, packages and deploys."""

    _block_type_name = "opsflow application"
    _block_type_slug = "opsflow-application"
    _description = "An application: repository, components with their build and test commands, deploy defaults."

    name: Name = Field(description="Application name; prefix of its images and artifact keys.")
    repository: str = Field(description="Clone URL (https://, ssh://, git@host:path or file://); no credentials in it.")
    forge_repo: ForgeRepo | Literal[""] = Field(
        default="",
        description="owner/name of the repository on the forge, for statuses, comments and webhooks.",
    )
    default_branch: Branch = Field(default="main", description="Branch merges land on.")
    components: list[Component] = Field(min_length=1, description="Parts built, tested and pushed in parallel.")
    env_files: list[EnvFile] = Field(default_factory=list, description="Env/secret files written into the checkout.")
    ml_project: bool = Field(default=False, description="Run the MLOps pipeline instead of GitOps for this repository.")
    untrusted_prs: UntrustedPullRequests = Field(
        default=UntrustedPullRequests.hold,
        description="A pull request from a fork, or by an author the forge does not list as a collaborator/member "
        "with write access, runs code nobody vetted on the build server. hold: nothing runs until a maintainer adds "
        "trusted_label (the status and a PR comment say so). run-without-secrets: it is built and tested without "
        "the env files and stores nothing (no artifact a merge could pick up); MLOps pull requests are held.")
    trusted_label: Label = Field(
        default=names.TRUSTED_LABEL,
        description="The label a maintainer adds to a held pull request to run it as a trusted one (its later "
        "pushes too, while the label stays).")
    deploy: DeployDefaults = Field(default_factory=DeployDefaults, description="Defaults for manual deploys.")

    @field_validator("repository")
    @classmethod
    def _repository_valid(cls, value: str) -> str:
        if not _REPO_RE.fullmatch(value or ""):
            raise ValueError(f"{value!r} is not a clone URL: use https://host/owner/repo.git, "
                             "git@host:owner/repo.git or file:///path")
        if re.match(r"^[a-z]+://[^/]*@", value) and not value.startswith("ssh://"):
            raise ValueError("credentials must not be embedded in the clone URL; the forge block holds the token")
        return value

    @model_validator(mode="after")
    def _unique_components(self) -> Application:
        names = [c.name for c in self.components]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"component names must be unique: {dupes}")
        return self

    def component(self, name: str) -> Component:
        """The component called ``name``; raises KeyError naming the known ones."""
        for comp in self.components:
            if comp.name == name:
                return comp
        known = [c.name for c in self.components]
        raise KeyError(f"application {self.name!r} has no component {name!r}; it has {known}")
