"""An application's definition: where its code is, how to build, test, package and deploy it."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from blocks.fields import (
    Argv,
    Branch,
    Cpu,
    EnvKeyPattern,
    ForgeRepo,
    HttpPath,
    Memory,
    Name,
    RelativeGlob,
    RelativePath,
)

#: Env file keys whose values are public (baked into builds on purpose), so never masked in logs and reports.
DEFAULT_PUBLIC_KEYS = ("PUBLIC_*", "NEXT_PUBLIC_*", "VITE_*")


class DeployMethod(StrEnum):
    rolling = "rolling"
    blue_green = "blue-green"


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
    public_keys: list[EnvKeyPattern] = Field(
        default_factory=lambda: list(DEFAULT_PUBLIC_KEYS),
        description="Keys (globs) whose values are public, e.g. baked into a web page: they are not masked in "
        "logs and reports. Every other value of the file is a secret.")


class Packaging(StrEnum):
    """What the artifact (the image build context) holds besides the Dockerfile."""

    output = "output"
    nextjs_standalone = "nextjs-standalone"


class DependencyManager(StrEnum):
    """The package manager that installs a component's dependencies from its lockfile."""

    npm = "npm"
    pnpm = "pnpm"
    yarn = "yarn"
    uv = "uv"
    pip = "pip"


class RuntimeDependencies(StrEnum):
    """Dependencies opsflow installs into the artifact for the image to run (the image build installs nothing)."""

    none = "none"
    npm = "npm"


_IMAGE_REF = r"^(opsflow:(busybox|node)|[a-z0-9][a-z0-9._/:@-]{0,254})$"
_BUILD_ARG = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_STAGE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


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
    junit_reports: list[RelativeGlob] = Field(
        default_factory=list,
        description="More JUnit XML reports, as globs relative to the component (e.g. 'reports/*.xml', "
        "'e2e/junit.xml'); every file matched is read. At least one must exist when the tests ran.",
    )
    install: DependencyManager | None = Field(
        default=None,
        description="Install the dependencies from the lockfile before the build: npm (npm ci), pnpm, yarn, uv "
        "(uv sync --frozen) or pip (requirements.txt into .venv). The installed tree is cached on the build server "
        "by the lockfile's hash, so an unchanged lockfile installs nothing.",
    )
    install_command: Argv | None = Field(
        default=None, description="Replaces the install command of `install` (same cache key rules)."
    )
    packaging: Packaging = Field(
        default=Packaging.output,
        description="'output': the build output is the whole runtime; 'nextjs-standalone': opsflow assembles "
        "Next.js's `.next/standalone` tree with `public/` and `.next/static` (next.config: output: 'standalone').",
    )
    runtime_dependencies: RuntimeDependencies = Field(
        default=RuntimeDependencies.none,
        description="'npm': install the production dependencies (package-lock.json, no devDependencies) into the "
        "artifact beside the build output, with package.json, so `node server.js` finds them in the image.",
    )
    build_cache: list[RelativePath] = Field(
        default_factory=list,
        description="Directories (relative to the component) its build tool reuses between builds, e.g. '.next/cache' "
        "(the default for nextjs-standalone): restored from this component's last successful build on the build "
        "server, saved after a build, never when a secret value is found in it.",
    )
    build_args: dict[str, str] = Field(
        default_factory=dict,
        description="Build arguments for the Dockerfile (ARG); not secret: they are visible in the image history.",
    )
    target: str | None = Field(
        default=None, pattern=_STAGE, description="The Dockerfile stage to build (docker build --target)."
    )
    dockerfile: RelativePath = Field(
        default="Dockerfile",
        description="Dockerfile relative to the component; built with the build output as context."
    )
    base_image: str = Field(
        default="opsflow:busybox",
        pattern=_IMAGE_REF,
        description="Only for a Dockerfile declaring ARG BASE_IMAGE: the image passed as that build arg, "
        "'opsflow:busybox' or 'opsflow:node' (base images opsflow builds itself) or any image reference. A Dockerfile "
        "may as well start FROM any image the build server's engine has or can pull from the registry.",
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

    @field_validator("build_args")
    @classmethod
    def _build_args_valid(cls, args: dict[str, str]) -> dict[str, str]:
        bad = [k for k in args if not re.fullmatch(_BUILD_ARG, k)]
        if bad:
            raise ValueError(f"build_args: {bad} are not build argument names (letters, digits, '_')")
        return args

    @model_validator(mode="after")
    def _packaging_fits(self) -> Component:
        if self.runtime_dependencies != RuntimeDependencies.none and self.packaging != Packaging.output:
            raise ValueError(f"component {self.name!r}: runtime_dependencies applies to packaging 'output'; "
                             "a Next.js standalone tree already holds the modules it needs")
        return self

    @property
    def build_cache_dirs(self) -> list[str]:
        """``build_cache``, or Next.js's ``.next/cache`` for a standalone Next.js component."""
        if self.build_cache:
            return list(self.build_cache)
        return [".next/cache"] if self.packaging == Packaging.nextjs_standalone else []

    @property
    def junit_globs(self) -> list[str]:
        """Every JUnit report pattern: ``junit_report`` then ``junit_reports``."""
        return ([self.junit_report] if self.junit_report else []) + list(self.junit_reports)


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
    components: list[Component] = Field(
        default_factory=list,
        description="Parts built, tested and pushed in parallel (at least one; none for an ml_project application, "
        "whose experiment is declared in the repository's opsflow-ml.yaml).")
    env_files: list[EnvFile] = Field(default_factory=list, description="Env/secret files written into the checkout.")
    ml_project: bool = Field(default=False, description="Run the MLOps pipeline instead of GitOps for this repository.")
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
        if not self.components and not self.ml_project:  # an error on the field itself, as min_length gave
            raise ValidationError.from_exception_data(type(self).__name__, [{
                "type": PydanticCustomError("too_short", "declare at least one component (an ml_project application "
                                                         "needs none: its opsflow-ml.yaml declares the experiment)"),
                "loc": ("components",), "input": self.components}])
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
