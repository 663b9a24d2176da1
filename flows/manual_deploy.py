"""Manual deploy: pick an application, a version, resources and one or more targets; see the
plan; run it, health-gated, with automatic rollback; several edge nodes are deployed concurrently.

The flow is ``async`` for a measured reason: Prefect 3.8's sync flow engine joins its flow-run
heartbeat thread on exit, and that thread sleeps in whole seconds (``flow_engine._send_heartbeats``),
so every sync run ends with up to 1 s of waiting: an empty sync flow took 1.13 s here, the same
flow async 0.39 s (``bench/deploy.py`` compares a deploy with a plain ``docker run``). Its tasks stay
sync (they run in worker threads or, called directly, as sync tasks); Python callers run it with
``asyncio.run(manual_deploy(...))``.

Task runs are kept where the UI shows something a user acts on: the plan of each target (the
approver opens it), the deploy to each target and the rollout of each component (their state and
logs). The rest (reading the engines, looking the tags up in the registry, the compose diff, the
deploy lock, the deploy record) are plain calls, the reads and lookups in threads side by side.
Measured on the stack with an empty task (``bench/deploy.py``'s notes): each submitted task run cost
a run 70 ms of CPU (0.14 s wall at load 7), most of it two new API clients, each building a TLS
context (22-26 ms of CPU); the async flow engine gives task threads no client of its own, so the
flow opens one ``SyncClientContext`` that every task run reuses, as Prefect's sync engine does
(then 16 ms of CPU per task run).

What else keeps Prefect's round trips (0.1-0.4 s each on the stack at load 12-18) off the critical path:
the run's result is not persisted and its storage is named, so the engine does not read the server's
default result storage twice before the body runs; the blocks (application, registry, records store,
targets) are read in one request (blocks/loading.py), not one each; each target's deploy lock (Prefect's
``concurrency()``, see tasks/deploy/lock.py) is taken in a thread of its own while the blocks load, and
given back while the results are published; without approval the plan is published while the targets
are deployed (every check that can stop a deploy runs before either). Measured with ``bench/deploy.py``'s
notes (interleaved runs of the code before and after, load 18): a rolling deploy 4.9 s before, 3.6 s after,
against 0.7 s for the plain ``docker run``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from prefect import get_run_logger, runtime
from prefect.context import SyncClientContext
from prefect.flow_runs import apause_flow_run
from pydantic import Field

from blocks import Application, ContainerRegistry, DockerHostTarget, KubernetesTarget, ObjectStore, SshHostTarget, names
from blocks.application import DeployMethod
from blocks.fields import BlockName, Cpu, EnvName, EnvValue, Memory, Name, TagOrDigest
from blocks.loading import BlockNotFound, aload_blocks, reads_blocks_first
from flows.options import UNPERSISTED_RESULT, flow
from opsflow.core.errors import InvalidInput, LockMissing
from opsflow.core.threads import ContextThreadPool
from tasks.deploy.compose_rollout import compose_diff
from tasks.deploy.docker_host import read_target
from tasks.deploy.lock import DeployLockThread, deploy_lock_name
from tasks.deploy.release import check_runtime_secrets, check_target, publish_plan, resolve_release, uses_secrets
from tasks.deploy.runtime import RuntimeValues, describe
from tasks.deploy.target import deploy_to_target, report_outcomes

TargetKind = Literal["docker", "kubernetes", "ssh"]
_TARGET_BLOCKS = {"docker": DockerHostTarget, "kubernetes": KubernetesTarget, "ssh": SshHostTarget}


def _running(releases, read) -> dict:
    """Per release, what runs now on a target (its role's containers), or why it could not be read
    (that target's deploy fails later; the plan of the others goes on)."""
    if read is None:
        return {}
    if isinstance(read, BaseException):
        return {r.key: f"could not read what runs there: {read}" for r in releases}
    return {r.key: [c for c in read["running"].get(r.component, [])
                    if c["labels"].get("org.opsflow.run-role", "service") == r.role] for r in releases}


async def _load(*wanted: tuple[type, str, str]) -> list:
    """The blocks of ``(class, name, what it is)`` triples, in one request (blocks/loading.py); a missing one is
    InvalidInput naming it."""
    try:
        return await aload_blocks(*((cls, name) for cls, name, _ in wanted))
    except BlockNotFound as exc:
        what = next(w for cls, name, w in wanted if cls is exc.cls and name == exc.name)
        raise InvalidInput(f"there is no {what} block named {exc.name!r}; create it in the Prefect UI "
                           "(Blocks) or with `opsflow stack up`, or pick an existing one") from None


async def _all(futures: list, errors: bool = False) -> list:
    """The results of ``futures`` (a ContextThreadPool's), awaited without blocking the flow's event loop;
    with ``errors`` a failure is returned as its exception, else the first one is raised."""
    return await asyncio.gather(*(asyncio.wrap_future(f) for f in futures), return_exceptions=errors)


class _TargetLocks:
    """The run's deploy locks, one per target, each held by a ``DeployLockThread`` for this flow run."""

    def __init__(self, app: str, logger):
        self.app, self.logger, self.held = app, logger, {}
        self.holder = {"type": "flow_run", "id": str(runtime.flow_run.id)} if runtime.flow_run.id else None

    def take(self, targets: list[str]) -> None:
        """Start taking the targets' locks. Never created here: a target's first deploy (no lock yet), or a
        target that turns out not to exist, leaves it to ``deploy_to_target`` after the checks."""
        for target in targets:
            if target not in self.held:
                self.held[target] = DeployLockThread(deploy_lock_name(self.app, target), holder=self.holder,
                                                     timeout_s=3600, logger=self.logger)

    async def wait(self, target: str) -> bool:
        """Wait until the target's lock is held: True; False when it does not exist yet (``deploy_to_target``
        creates and takes it). Raises what taking it raised (LockTimeout, RemoteError)."""
        self.take([target])
        try:
            await asyncio.wrap_future(self.held[target].acquired)
        except LockMissing:
            return False
        return True

    def release(self, target: str) -> None:
        self.held[target].release()

    def join(self) -> None:
        """Give every lock back and wait until they are (a lock still being waited for is not waited for)."""
        for held in self.held.values():
            held.join()


async def _deploy_targets(targets: list[str], max_parallel: int, locks: _TargetLocks, logger, submit) -> dict:
    """Deploy each target once its lock is held (``submit(target, lock_held)``: its deploy-to-target task
    run), at most ``max_parallel`` at once, in their order; per target its results or its error (one target
    failing does not stop the others). Each lock is given back as soon as its target is done."""
    turns = asyncio.Semaphore(max_parallel)

    async def deploy(target: str) -> list[dict] | BaseException:
        async with turns:
            try:
                held = await locks.wait(target)
                return await asyncio.to_thread(submit(target, held).result)
            except Exception as exc:  # noqa: BLE001 - one target failing must not stop the others; reported after
                logger.error("deploy to %s failed: %s", target, exc)
                return exc
            finally:
                locks.release(target)  # given back while the other targets and the results go on

    return dict(zip(targets, await asyncio.gather(*(deploy(t) for t in targets)), strict=True))


def _check_blue_green(application: Application, chosen: list[str], blocks: dict) -> None:
    """Blue-green on Docker hosts needs bridge networking and a port to switch; raises InvalidInput naming
    what lacks them."""
    host_networked = [t for t, b in blocks.items() if b.network_mode != "bridge"]
    portless = [n for n in chosen if not application.component(n).ports]
    if host_networked or portless:
        raise InvalidInput("blue-green on Docker hosts needs bridge networking and a port to switch: "
                           + "; ".join([*(f"target {t} uses network_mode=host" for t in host_networked),
                                        *(f"component {n} has no port" for n in portless)])
                           + "; use method=rolling there")


def _await_plans(targets: list[str], plans: list, logger) -> None:
    """Wait for the plans published beside the deploy; one that failed (its task run shows why) is logged:
    the deploy it describes stands."""
    for target, plan in zip(targets, plans, strict=True):
        try:
            plan.result()
        except Exception as exc:  # noqa: BLE001 - the plan's task run shows its failure; the deploy stands
            logger.error("the plan of %s could not be published (the deploy went on): %s", target, exc)


def _run_name() -> str:
    params = runtime.flow_run.parameters
    targets = params.get("targets") or ["?"]
    return f"deploy-{params.get('app')}-" + (targets[0] if len(targets) == 1 else f"{len(targets)}-targets")


def _blocks_read_first(arguments) -> list:
    """What the flow's first ``_load`` reads, from its arguments (``reads_blocks_first``)."""
    return [(Application, arguments["app"]), (ContainerRegistry, arguments["registry_block"]),
            (ObjectStore, arguments["records_store"]),
            *((_TARGET_BLOCKS[arguments["target_kind"]], t) for t in arguments["targets"])]


# The run's result (what runs where) is in its results artifact and the deploy records (flows/options.py).
@flow(name="manual-deploy", flow_run_name=_run_name, log_prints=True, **UNPERSISTED_RESULT)
@reads_blocks_first(_blocks_read_first)
async def manual_deploy(
    app: Name,
    version: TagOrDigest,
    targets: Annotated[list[Name], Field(min_length=1, max_length=100)] = [names.EDGE_NODE],  # noqa: B006 - Prefect copies parameter defaults per run
    target_kind: TargetKind = "docker",
    components: list[Name] | None = None,
    roles: list[Name] | None = None,
    replicas: Annotated[int | None, Field(ge=0, le=100)] = None,
    cpu: Cpu | None = None,
    memory: Memory | None = None,
    method: DeployMethod | None = None,
    env: dict[EnvName, EnvValue] | None = None,
    init: bool | None = None,
    approve: bool = False,
    max_parallel: Annotated[int, Field(ge=1, le=32)] = 4,
    registry_block: BlockName = names.REGISTRY,
    records_store: BlockName = names.ARTIFACT_STORE,
) -> dict:
    """Deploy ``version`` of an application to one or more targets: plan, optional approval,
    health-gated rollout, automatic rollback.

    Args:
        app: Application block name.
        version: image tag (e.g. the commit SHA or a release tag) or digest, for every component.
        targets: target block names (Docker hosts / edge nodes, Kubernetes targets or SSH hosts,
            all of kind ``target_kind``); several are deployed concurrently.
        target_kind: docker, kubernetes or ssh: the type of the target blocks.
        components: components to deploy; all of the application's when empty.
        roles: run roles to deploy (e.g. service, batch); every role of each component when empty.
        replicas: instances per component (default: the application's deploy defaults).
        cpu: CPU per instance, a Kubernetes quantity such as 250m (default: the application's).
        memory: memory per instance, such as 256Mi (default: the application's).
        method: rolling or blue-green (default: the application's).
        env: extra (non-secret) environment variables for this deploy, on top of the components'.
        init: run an init process as PID 1 (signals forwarded: a Node app stops at once); the
            components' setting when empty.
        approve: pause after showing the plan until someone resumes the run in the UI.
        max_parallel: targets deployed at the same time.
        registry_block: ContainerRegistry block the images are in.
        records_store: ObjectStore block where deploys are recorded (registry cleanup reads them).
    Returns:
        Per target: per component image, version, previous image and health; failed targets with the error.
    Raises:
        InvalidInput: unknown application, target, component, role or version, a missing Secret
            block, a bind mount outside the target's allowed paths, limits the engine refuses, a
            compose file that does not parse or lacks the service: before anything changes.
        DeployFailed: a target did not become healthy (each failed target was rolled back; the
            others are deployed); the message lists the failed targets.
    """
    logger = get_run_logger()
    if len(set(targets)) != len(targets):
        raise InvalidInput(f"targets lists a target twice: {targets}")
    # Each target's deploy lock is taken in a thread of its own while the blocks load and the plan is published
    # (with approval: after it), and given back while the results are published (tasks/deploy/lock.py).
    locks = _TargetLocks(app, logger)
    if not approve:
        locks.take(targets[:max_parallel])
    try:
        # One Prefect client for every task run of this run, as Prefect's sync flow engine gives its tasks
        # (see the module docstring).
        with SyncClientContext.get_or_create():
            # What _blocks_read_first names: a worker's run process has started reading them (blocks.loading).
            application, registry, store, *loaded = await _load(
                (Application, app, "application"), (ContainerRegistry, registry_block, "container registry"),
                (ObjectStore, records_store, "object store"),
                *((_TARGET_BLOCKS[target_kind], t, f"{target_kind} target") for t in targets))
            blocks = dict(zip(targets, loaded, strict=True))
            chosen = components or [c.name for c in application.components]
            unknown = sorted(set(chosen) - {c.name for c in application.components})
            if unknown:
                raise InvalidInput(f"application {app!r} has no component(s) {unknown}")
            chosen_method = method or application.deploy.method
            if target_kind == "docker" and chosen_method == DeployMethod.blue_green:
                _check_blue_green(application, chosen, blocks)
            role_names = {n: [r.name for r in application.component(n).run_roles()] for n in chosen}
            missing = sorted(set(roles or []) - {r for names in role_names.values() for r in names})
            if missing:
                raise InvalidInput(f"no chosen component of {app!r} has the role(s) {missing}; they have {role_names}")
            docker_blocks = {t: b for t, b in blocks.items() if target_kind == "docker"}
            wanted = [name for name in chosen if not roles or set(roles) & set(role_names[name])]
            # The engines are read while the images are looked up in the registry: neither needs the other.
            # Plain calls in threads, not task runs (see the module docstring).
            with ContextThreadPool(max_workers=max(1, min(len(docker_blocks) + len(wanted), 16))) as pool:
                reads = {t: pool.submit(read_target, b, app, sorted(chosen)) for t, b in docker_blocks.items()}
                resolving = [pool.submit(resolve_release, registry, application, name, version, replicas, cpu, memory,
                                         chosen_method, env=env, init=init,
                                         roles=[r for r in roles if r in role_names[name]] if roles else None)
                             for name in wanted]
                releases = [rel for resolved in await _all(resolving) for rel in resolved]
                shown = (check_runtime_secrets(releases) if uses_secrets(releases)
                         else {r.key: describe(r.runtime, RuntimeValues()) for r in releases})
                diffs = dict(zip([t for t, b in docker_blocks.items() if b.compose_project], await _all(
                    [pool.submit(compose_diff, b, releases) for b in docker_blocks.values() if b.compose_project]),
                    strict=True))
                seen = dict(zip(reads, await _all(list(reads.values()), errors=True), strict=True))
            for target, block in blocks.items():
                got = seen.get(target)
                check_target(releases, target_kind, target, block, None if isinstance(got, BaseException) or got is None
                             else got["info"])
            plans = [publish_plan.submit(
                releases, target_kind, target, _running(releases, seen.get(target)),
                getattr(block, "namespace", "default"), getattr(block, "os", None) == "windows",
                getattr(block, "network_mode", "host"), shown,
                diffs.get(target),
                getattr(block, "ingress_class", None)) for target, block in blocks.items()]
            if approve:
                for plan in plans:
                    plan.result()
                logger.info("waiting for approval: resume this run in the Prefect UI to deploy, cancel it to stop")
                await apause_flow_run(timeout=24 * 3600)
            # Without approval nobody waits for the plans: they are published while the targets are deployed
            # (every check that can stop a deploy ran above), and awaited before the results.

            outcomes = await _deploy_targets(targets, max_parallel, locks, logger, lambda target, held: (
                deploy_to_target.submit(app, version, target, target_kind, blocks[target], registry, releases, store,
                                        lock_held=held)))
            _await_plans(list(blocks), plans, logger)
            return await report_outcomes(app, version, targets, outcomes)
    finally:
        await asyncio.to_thread(locks.join)


