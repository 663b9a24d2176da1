"""An application's definition: where its code is, how to build, test, package and deploy it."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from blocks import names
from blocks.fields import (
    Argv,
    BlockName,
    Branch,
    ContainerPath,
    Cpu,
    CronSchedule,
    DnsName,
    EnvKeyPattern,
    EnvName,
    EnvValue,
    ForgeRepo,
    HttpPath,
    Label,
    LabelKey,
    LabelValue,
    Memory,
    Name,
    RelativeGlob,
    RelativePath,
    check_host_path,
    check_name,
)
from blocks.schema import CachedJsonSchema

#: Env file keys whose values are public (baked into builds on purpose), so never masked in logs and reports.
DEFAULT_PUBLIC_KEYS = ("PUBLIC_*", "NEXT_PUBLIC_*", "VITE_*")


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
    drain_s: float = Field(default=2.0, ge=0, le=600, description="At most this many seconds for requests "
                           "already sent to the old version to finish after traffic moved to the new one (bridge "
                           "networking); the old containers go as soon as the proxy has none open on them.")


class DeployDefaults(BaseModel):
    """Defaults the manual deploy form starts from."""

    replicas: int = Field(default=1, ge=0, le=100, description="Instances to run.")
    cpu: Cpu = Field(default="250m", description="CPU per instance (Kubernetes quantity).")
    memory: Memory = Field(default="256Mi", description="Memory per instance (Kubernetes quantity).")
    method: DeployMethod = Field(default=DeployMethod.rolling, description="Rollout method.")


class RestartPolicy(StrEnum):
    """What the engine does when a container exits (Docker's restart policies)."""

    no = "no"
    on_failure = "on-failure"
    always = "always"
    unless_stopped = "unless-stopped"


class SecretFile(BaseModel):
    """A file the container reads a secret from, filled from a Prefect ``Secret`` block at deploy time."""

    secret_block: BlockName = Field(description="Prefect Secret block whose value is the file's content.")
    path: ContainerPath = Field(description="Where the file appears in the container, e.g. /run/secrets/db-password.")
    mode: int = Field(default=0o444, ge=0, le=0o777, description="File mode in the container (decimal in JSON; "
                      "0o444 = 292: readable by the app's user, whichever it is).")


class Volume(BaseModel):
    """A named volume or a host directory mounted into the container."""

    source: str = Field(description="A named volume (e.g. 'shop-data') or an absolute host path, which must be "
                        "under one of the target block's allowed_host_paths.")
    target: ContainerPath = Field(description="Mount point in the container, e.g. /var/lib/app.")
    read_only: bool = Field(default=False, description="Mount read-only.")

    @field_validator("source")
    @classmethod
    def _source_valid(cls, value: str) -> str:
        return check_host_path(value) if value.startswith("/") else check_name(value)

    @property
    def is_host_path(self) -> bool:
        return self.source.startswith("/")


class RuntimeConfig(BaseModel):
    """How a component's containers run: environment, secrets, mounts, command, restart, labels, networks.

    Values from ``env`` are plain configuration and are shown in plans. ``env_files`` and
    ``secret_files`` name Prefect ``Secret`` blocks read at deploy time: their values reach the
    engine only (never an image, a plan, a log); plans show names and a fingerprint. Env values
    are visible in ``docker inspect`` (Env) to whoever may use the engine: prefer ``secret_files``.
    """

    env: dict[EnvName, EnvValue] = Field(default_factory=dict, description="Environment variables (not secret).")
    env_files: list[BlockName] = Field(
        default_factory=list, description="Prefect Secret blocks holding KEY=VALUE lines (a .env file); each "
        "variable is set in the container at deploy time.")
    secret_files: list[SecretFile] = Field(default_factory=list, description="Secret files mounted in the container.")
    volumes: list[Volume] = Field(default_factory=list, description="Named volumes and host paths to mount.")
    command: list[str] | None = Field(default=None, description="Replaces the image's ENTRYPOINT (argv list).")
    args: list[str] | None = Field(default=None, description="Replaces the image's CMD (argv list).")
    restart_policy: RestartPolicy | None = Field(default=None, description="Restart policy (default "
                                                 "unless-stopped for services, no for batch runs).")
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Extra container labels, e.g. Traefik routing labels; on Kubernetes "
        "they become pod annotations.")
    networks: list[Name] = Field(default_factory=list, description="Extra Docker networks to join (created as "
                                 "bridge networks when missing), e.g. the one Traefik watches.")
    init: bool | None = Field(default=None, description="Run an init process as PID 1 (docker --init) that "
                              "forwards signals and reaps zombies: a Node app then stops at once on SIGTERM.")

    @field_validator("command", "args")
    @classmethod
    def _argv_valid(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any("\0" in arg for arg in value):
            raise ValueError("command arguments must not contain NUL bytes")
        if value is not None and value and not value[0].strip():
            raise ValueError("the program (first element) must not be empty")
        return value

    @model_validator(mode="after")
    def _unique_targets(self) -> RuntimeConfig:
        targets = [v.target for v in self.volumes] + [f.path for f in self.secret_files]
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        if dupes:
            raise ValueError(f"two mounts or secret files share a container path: {dupes}")
        return self

    def merged(self, over: RuntimeConfig) -> RuntimeConfig:
        """This configuration with ``over`` on top: maps merged (``over`` wins), lists appended
        (a mount of ``over`` replaces one of this at the same path), scalars replaced when set."""
        paths = {v.target for v in over.volumes} | {f.path for f in over.secret_files}
        return RuntimeConfig(
            env={**self.env, **over.env}, env_files=list(dict.fromkeys([*self.env_files, *over.env_files])),
            secret_files=[f for f in self.secret_files if f.path not in paths] + over.secret_files,
            volumes=[v for v in self.volumes if v.target not in paths] + over.volumes,
            command=over.command if over.command is not None else self.command,
            args=over.args if over.args is not None else self.args,
            restart_policy=over.restart_policy or self.restart_policy, labels={**self.labels, **over.labels},
            networks=list(dict.fromkeys([*self.networks, *over.networks])),
            init=over.init if over.init is not None else self.init)


class RoleKind(StrEnum):
    """``service``: long-running, with ports and a health check. ``batch``: runs a command to completion."""

    service = "service"
    batch = "batch"


class Ingress(BaseModel):
    """How a service role is reached through the cluster's ingress controller (Kubernetes)."""

    host: DnsName = Field(description="Host name routed to the service, e.g. shop.example.com.")
    path: HttpPath = Field(default="/", description="Path prefix routed to the service.")
    tls_secret: Name | None = Field(default=None, description="Kubernetes TLS Secret (certificate) for the host.")
    ingress_class: Name | None = Field(default=None, description="IngressClass, e.g. nginx or traefik; the "
                                       "target block's default when empty.")
    port: int | None = Field(default=None, ge=1, le=65535, description="Service port; the first port when empty.")


class Autoscale(BaseModel):
    """A HorizontalPodAutoscaler for a service role (Kubernetes): scales with CPU use."""

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most replicas.")
    cpu_percent: int = Field(default=70, ge=1, le=1000, description="Target average CPU use, % of the request.")

    @model_validator(mode="after")
    def _range(self) -> Autoscale:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is greater than max_replicas ({self.max_replicas})")
        return self


class RunRole(BaseModel):
    """One way of running a component's image: e.g. ``service`` (ports, health check) and ``batch``
    (a command, run once per deploy or on a schedule). Each role deploys and rolls back on its own.

    The role named ``service`` keeps the component's container names (``<app>-<component>``);
    other roles are ``<app>-<component>-<role>``.
    """

    name: Name = Field(description="Role name, e.g. 'service', 'batch', 'worker'.")
    kind: RoleKind = Field(default=RoleKind.service, description="service (long-running) or batch (to completion).")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Runtime settings on top of the "
                                   "component's (e.g. another command).")
    replicas: int | None = Field(default=None, ge=0, le=100, description="Instances (services); the deploy's when "
                                 "empty.")
    cpu: Cpu | None = Field(default=None, description="CPU per instance; the deploy's when empty.")
    memory: Memory | None = Field(default=None, description="Memory per instance; the deploy's when empty.")
    schedule: CronSchedule | None = Field(default=None, description="batch: cron schedule (Kubernetes CronJob); "
                                          "empty: the command runs once per deploy (a Job).")
    run_deadline_s: float = Field(default=600, gt=0, le=86400, description="batch: seconds a run may take.")
    ingress: Ingress | None = Field(default=None, description="service, Kubernetes: route external traffic to it.")
    autoscale: Autoscale | None = Field(default=None, description="service, Kubernetes: scale with CPU use.")

    @model_validator(mode="after")
    def _kind_fields(self) -> RunRole:
        if self.kind == RoleKind.batch and (self.ingress or self.autoscale):
            raise ValueError(f"role {self.name!r} is a batch role: ingress and autoscale are for service roles")
        if self.kind == RoleKind.service and self.schedule:
            raise ValueError(f"role {self.name!r} is a service role: a schedule is for batch roles")
        return self


SERVICE_ROLE = "service"


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
    test_command: Argv | None = Field(
        default=None, description="Test command as an argv list, run after the build (see test_after_build)."
    )
    test_after_build: bool = Field(
        default=True,
        description="Run the tests once the build has finished and its artifact is stored (the default). False: the "
        "tests start beside the build, for tests that do not use its output (they compile or run their own tree), as "
        "two jobs without `needs:` do in GitHub Actions; both must pass, and a failing build does not stop the tests.",
    )
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
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="How its containers run: env, "
                                   "secrets, mounts, command, restart policy, labels, networks, init.")
    roles: list[RunRole] = Field(default_factory=list, description="Run roles of its image; empty: one 'service' "
                                 "role with the component's ports and health check.")
    compose_service: Name | None = Field(default=None, description="Service name in compose-project edge nodes "
                                         "(roles other than 'service' add '-<role>'); the component's name when empty.")

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

    @field_validator("roles")
    @classmethod
    def _roles_unique(cls, roles: list[RunRole]) -> list[RunRole]:
        names = [r.name for r in roles]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"role names must be unique: {dupes}")
        return roles

    def run_roles(self) -> list[RunRole]:
        """The roles to deploy: the declared ones, or the one implicit ``service`` role."""
        return self.roles or [RunRole(name=SERVICE_ROLE)]

    def role(self, name: str) -> RunRole:
        """The run role called ``name``; raises KeyError naming the known ones."""
        for role in self.run_roles():
            if role.name == name:
                return role
        raise KeyError(f"component {self.name!r} has no role {name!r}; it has {[r.name for r in self.run_roles()]}")


_REPO_RE = re.compile(r"^(https?|ssh|git|file)://[^\s@]*[^\s/]$|^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")


class Application(CachedJsonSchema, Block):
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
