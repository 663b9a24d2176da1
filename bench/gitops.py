"""GitOps benchmark: what Prefect orchestration costs on top of the work itself.

    uv run python bench/gitops.py [--rounds 2]

Uses the stack of ``opsflow stack up`` (started here if it is not running; ports from the
OPSFLOW_* variables like the CLI). Every measured run starts cold: a new commit, so no stored
artifact and no image in the registry. Runs of the two sides alternate so drift hits both.

* ``overhead_ratio`` / ``overhead_s``: PR flow + merge flow on the sample shop (two components)
  vs a plain script calling the same task functions (``.fn``, no Prefect) in the same order
  and with the same per-component parallelism (threads). Best round of each.
* ``rerun_ratio``: a second PR flow run for the same SHA vs the cold one.
* ``parallel_ratio``: the PR flow on two components vs on one (backend); ``parallel_ratio_plain``
  is the same for the plain script, i.e. what the machine's cores allow.
* ``rerun_ratio_server``: the same as ``rerun_ratio`` from the run durations the Prefect server
  recorded; ``heartbeat_teardown_s``: the wait Prefect's heartbeat thread still adds when a flow call
  returns. The flows run in this process as the vault-build worker's run process runs them, with
  ``prompt_heartbeat_stop`` (opsflow/worker/prefect_adapter.py): without it each call ends up to 1 s late.
* ``incremental_pr_ratio``: a PR changing one source file (backend) after a PR that warmed the
  dependency caches vs a cold PR (a new, empty ``OPSFLOW_CACHE_DIR``: npm downloads and installs
  everything) of a commit changing both components. Median of the rounds. Target <= 0.4.
  ``incremental_floor_ratio``: the one-file PR's own work alone (``build_beside_test_s``: the backend's build
  beside its tests in a clone with its dependencies restored, no flow) against the same cold PRs.
* ``merge_ratio``: the merge flow (both components) vs a plain script doing ``docker login`` (the
  registry has htpasswd auth and TLS), then ``docker build`` + ``docker push`` of the same contexts (the
  artifacts unpacked), one thread per component, with the docker CLI and builder opsflow chose (BuildKit
  through the CLI where it can). Median. Target <= 1.3. ``merge_floor_ratio``: the merge's own work without
  Prefect (``plain_merge``: the same functions called plainly, no task runs, no report) on a commit of its own,
  against the same plain script: the least a merge of this kind costs before any orchestration;
  ``merge_one_flow_run_ratio``: the same work inside one Prefect flow run (``merge_in_one_flow_run``: no task runs,
  no report), on a commit of its own.
* ``--nextjs``: ``nextjs_pr_s`` and ``nextjs_merge_s``, the storefront sample (Next.js standalone)
  through PR and merge, and ``nextjs_serves`` (its image answers ``/api/health`` and a static chunk).

``--only incremental,merge`` runs a subset. Prints one line per measurement and a final line ``RESULT {json}``.

Measured here (2 cores shared with other engineers' test runs; Prefect on PostgreSQL), ``--only merge
--rounds 5``, before/after runs alternating, load average 3-7.5: ``merge_ratio`` 3.29 and 3.65 before
(merge flow median 2.2 s, plain login + build + push 0.6-0.9 s; ``flow_call_s`` 1.18) and 2.40 and 2.54
after (flow 2.3-2.6 s, plain 0.9-1.1 s; ``flow_call_s`` 0.25-0.31). What changed: the flows end when they
end (the worker's prompt heartbeat stop, up to 1 s per call), the run's blocks load at once and the merge
loads no env file secrets, one tag lookup per image over one connection while the commit's trees are fetched,
registry TLS contexts shared per CA, docker clients reuse the negotiated API version, the report's table
beside its markdown; the PR run loads its secrets while it clones. Target 1.3 not met: what is left is
Prefect's per-run and per-task round trips (15 task runs, ~0.1-0.2 s each on the critical path at that load)
against a plain script of four commands. ``--only incremental,merge --rounds 3``: ``incremental_pr_ratio``
0.59-0.90 before, 0.63-1.07 after, depending on the load. Target 0.4 not reachable by orchestration: the
frontend is already reused (no install, build or test) and the backend restores its dependency tree in
0.1 s; what is left is the backend's own ``npm run build`` + ``npm test`` (two ``tsc`` compilations,
2.0 s + 3.0 s on a quiet machine), while the cold PR runs both components at once on the two cores (8-12 s
quiet): even with no orchestration at all the ratio would be about 0.6.

Issue 19, second pass (same session, before/after alternating on one stack, load average 10-20 from other engineers'
benchmarks; product code of the previous commit vs this one, with this bench): ``--only incremental,merge --rounds
3``: ``merge_ratio`` 2.60 before (flow median 10.25 s, plain 3.94 s) and 1.89 after (flow 5.00 s, plain 2.64 s);
``--only merge --rounds 3`` at load 7-9: 3.07 before (flow 4.32 s, plain 1.41 s), 2.04 after (flow 3.26 s, plain
1.60 s); a pair straddling a drop of the load to 3 gave 1.54 and 3.66 (plain 0.4-0.85 s when quiet: the ratio is
load-dependent, compare pairs). What changed (profiled with pyinstrument and the server's task-run timeline): a task
submitted with an unfinished future as an argument read that task run's state from the API before it started
(``prefect.tasks._infer_parent_task_runs``: 1.1-1.8 s each at that load, on the path of every image build), so each
component's build and push are called with values in a thread of their own; the registry tag lookups and the
artifact metadata reads are plain calls side by side (no task runs); the image goes through the engine once and its
other tags are put on its digest in the registry; the prune runs beside the workspace cleanup; the GitOps flows name
their result storage and persist nothing (Prefect read the server's default result storage three times before the
first task); the Prefect clients here share one TLS context, as in the worker. What is left of a merge: the flow
run's own round trips (create, start, final state), four block reads, the report's two artifacts, then the fetch
(0.4 s), download (0.2-0.5 s), build (~0.9 s) and push (0.7-1.0 s) against a plain script's login, build and push;
each server round trip costs 0.1-3 s at that load. ``incremental_pr_ratio``: 0.675 before, 0.589 after, within the
noise (cold runs took 25-97 s as the load moved). The incremental PR still spends ~85% of its time in the backend's
own ``npm run build`` and ``npm test`` (two ``tsc`` programs, 6-7 s each at that load, parse-bound: ``tsc
--extendedDiagnostics`` parse 3.5 s, bind 2.2 s, check 1.6 s of 8.4 s); ``tsc --incremental`` with its build info
restored saved nothing measurable (it still parses every file; the sample's ``prebuild``/``pretest`` delete the
outputs anyway), and the tests run after the build by contract (``test_command``: "run after the build"), so the two
compilations cannot overlap. The frontend's unchanged tree already reuses its stored, tested artifact (no install,
build or test), and the backend's ``node_modules`` is restored by a copy-on-write copy in 0.1-0.2 s (a hard link
would let a build write into the cache).

This round (the run's blocks read in one request, ``blocks/loading.py``), fresh clone at f5d68f6 on the default
stack, quiet machine (load 1-3), ``--only incremental,merge --rounds 3``: ``merge_ratio`` 2.32 (flow 1.11-1.41 s,
plain 0.51-0.60 s; ``flow_call_s`` 0.18), ``incremental_pr_ratio`` 0.69 (cold 6.7-8.5 s, one-file PR 4.1-4.9 s). A
run of the same command while a unit test used the cores gave 0.39: the cold PRs (two components at once) slow
down more under load than the one-file PR, so only quiet runs compare. Targets not met.

The sample shop's tests now run beside its build (``test_after_build: false``: they compile their own tree): on one
stack, ``--only incremental --rounds 3``, the cold PR went from 10.6-12.4 s to 6.8-7.2 s and the one-file PR from
5.0-6.6 s to 3.1-3.5 s; the ratio stayed 0.49-0.50 (both sides gained). Closing run (fresh clone at 949eb05, default
stack, default arguments): ``incremental_pr_ratio`` 0.464 (cold 10.75/10.0 s, one-file 4.19/5.44 s), ``merge_ratio``
2.79 (flow 1.72/2.02 s, plain 0.70/0.65 s), ``overhead_ratio`` 1.42, ``rerun_ratio`` 0.06. Targets not met.

Next closing run (fresh clone at 1929edb after ``make demo``, ``--only incremental,merge``): ``merge_ratio`` 1.817
(flow 0.89/0.81 s, plain 0.50/0.44 s), ``incremental_pr_ratio`` 0.464 (cold 5.39/5.56 s, one-file 2.51/2.57 s).
The merge run's task timeline (0.75 s from its start): blocks and lookups 0.065 s, the commit's trees 0.05 s,
artifact metadata 0.025 s, base images and artifacts 0.055 s, build 0.26 s, push 0.17 s (build and push as long as
the plain script's), prune, cleanup and the report 0.1 s; before its start, the flow run's creation ~0.1 s.

The one-file PR's floor (this session, quiet machine, stack down): the backend's own ``npm run build`` beside ``npm
test`` in a copy of the sample with its cached ``node_modules`` took 1.91-2.01 s (4 runs). Against cold PRs of 4.5-5.6 s
that is a ratio of 0.35-0.43 before any orchestration: 0.4 leaves ~0.1 s for the flow run, the clone, the plan reads,
the cache restore, the env files, eight task runs, the artifact, the test record and the report. Prefect alone costs
more (``bench/deploy.py``'s floors: ~90 ms per flow run, ~27 ms per task run on the default stack). Measured one-file
PRs: 2.17-2.69 s.

The floors, now measured by this bench beside each ratio (fresh clone, default stack, quiet; the application and
store blocks loaded before the merge floors' clocks start): ``--only merge --rounds 5``, twice: ``merge_ratio`` 1.89 and
2.14 (flow 0.76/0.83 s, plain 0.40/0.39 s), ``merge_floor_ratio`` 1.17 and 1.18 (the merge's work without Prefect,
0.47/0.45 s), ``merge_one_flow_run_ratio`` 1.40 and 1.34 (the same work in one flow run, no task runs and no report:
0.56/0.52 s). ``--only incremental,merge``: ``incremental_floor_ratio`` 0.352 (the backend's build beside its tests
1.87/1.68 s against cold PRs of 5.20/4.89 s; the one-file PR 2.29/2.22 s, 0.447); an earlier run 0.372-0.388. The 1.3
target is below one Prefect flow run around the merge's own work; 0.4 leaves the one-file PR 0.05-0.25 s beyond its
build and tests for the flow run, the clone, the restore, eight task runs, the artifact and the report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def plain_pipeline(app_name: str, head: str, merge_sha: str, merge: bool = True) -> None:
    """The GitOps work without Prefect: the same functions, the same order, threads per component."""
    from prefect.blocks.system import Secret
    from prefect.logging import disable_run_logger

    from blocks import Application, ObjectStore
    from tasks.app_tests import run_tests
    from tasks.artifacts.store import read_plan, record_test_results, save_artifact
    from tasks.build import build_app
    from tasks.build.deps import install_deps
    from tasks.env_files import fetch_env_files, redaction_list
    from tasks.git import clone_repo
    from tasks.workspace import cleanup_workspace

    with disable_run_logger():
        app = Application.load(app_name)
        store = ObjectStore.load("opsflow-artifacts")
        secrets = {e.secret_block: Secret.load(e.secret_block) for e in app.env_files}
        # pull request
        checkout = clone_repo.fn(app.repository, head)
        with ThreadPoolExecutor(len(app.components)) as pool:
            list(pool.map(lambda comp: install_deps.fn(checkout, comp), app.components))
        written = fetch_env_files.fn(checkout, app.env_files, secrets)
        redact = redaction_list(checkout, written)

        def pr_component(comp):
            plan = read_plan(store, checkout, app.name, comp)
            build = build_app.fn(checkout, comp, redact)
            ref = save_artifact.fn(store, plan, build, comp, checkout)
            report = run_tests.fn(checkout, comp, redact)
            record_test_results.fn(store, ref.key, report.summary())

        with ThreadPoolExecutor(len(app.components)) as pool:
            list(pool.map(pr_component, app.components))
        cleanup_workspace.fn([checkout.root])
    if merge:
        plain_merge(app, store, merge_sha)


def plain_merge(app, store, merge_sha: str) -> None:
    """The merge's work without Prefect (the same functions, ``.fn``, threads per component) for the loaded
    Application and ObjectStore blocks ``app`` and ``store``: the registry and engine blocks, the commit's trees, the
    artifacts' metadata, each image's tag lookup, the artifact, its build and push, the cleanup and the prune. No
    task runs and no report: the least the merge flow's own work costs."""
    from prefect.logging import disable_run_logger

    from blocks import ContainerRegistry, DockerHostTarget
    from flows.gitops_merge import branch_tag
    from tasks.artifacts.store import load_artifact, read_plan
    from tasks.git import clone_repo
    from tasks.images.base import ensure_base_image
    from tasks.images.build import build_image
    from tasks.images.prune import prune_build_images
    from tasks.images.push import push_image
    from tasks.registry.lookup import lookup_image
    from tasks.workspace import cleanup_workspace

    with disable_run_logger():
        registry = ContainerRegistry.load("local-registry")
        engine = DockerHostTarget.load("build-server")
        checkout = clone_repo.fn(app.repository, merge_sha, files=False)
        tags = [merge_sha, branch_tag("main")]
        bases = {f"opsflow:{k}": ensure_base_image.fn(engine, k) for k in ("busybox", "node")}

        def merge_component(comp):
            plan = read_plan(store, checkout, app.name, comp)
            repository = registry.repository(f"{app.name}-{comp.name}")
            if lookup_image.fn(registry, repository, merge_sha):
                return
            loaded = load_artifact.fn(store, plan.key)
            built = build_image.fn(engine, loaded, repository, tags, revision=merge_sha, source=app.repository,
                                   build_args={"BASE_IMAGE": bases[comp.base_image]},
                                   labels={"org.opencontainers.image.created": checkout.committed_at})
            push_image.fn(engine, registry, built)
            cleanup_workspace.fn([loaded.path])

        with ThreadPoolExecutor(len(app.components)) as pool:
            list(pool.map(merge_component, app.components))
        cleanup_workspace.fn([checkout.root])
        prune_build_images.fn(engine)


class Bench:
    def __init__(self, root: Path):
        from opsflow.samples import SHOP_SOURCE, SampleRepo, save_shop_blocks

        self.repo = SampleRepo(root, SHOP_SOURCE)
        self.repo.commit("initial")
        save_shop_blocks(self.repo.url, name="bench-shop")
        save_shop_blocks(self.repo.url, name="bench-shop-one", components=("backend",))
        self.n = 0

    def fresh_commit(self) -> tuple[str, str]:
        """A PR head and its merge commit with new trees for both components."""
        self.n += 1
        branch = f"bench-{self.n}"
        for comp in ("backend", "frontend"):
            self.repo.write(f"{comp}/src/bench-{self.n}.txt", f"round {self.n} {time.time()}\n")
        head = self.repo.commit(f"bench round {self.n}", branch=branch)
        return head, self.repo.merge(branch)

    def flows(self, app: str, merge: bool = True) -> tuple[float, str, float]:
        """Wall time of the calls, the PR head, and the PR run's duration as the server recorded it."""
        from flows.gitops_merge import gitops_merge
        from flows.gitops_pr import gitops_pr

        head, merge_sha = self.fresh_commit()
        started = time.perf_counter()
        state = gitops_pr(app=app, pr=self.n, sha=head, return_state=True)
        state.result()
        if merge:
            gitops_merge(app=app, sha=merge_sha)
        return time.perf_counter() - started, head, server_seconds(state)

    def plain(self, app: str, merge: bool = True) -> float:
        head, merge_sha = self.fresh_commit()
        started = time.perf_counter()
        plain_pipeline(app, head, merge_sha, merge=merge)
        return time.perf_counter() - started


def server_seconds(state) -> float:
    """Running → final, as the Prefect server recorded the flow run (what the UI shows)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).total_run_time.total_seconds()


def heartbeat_teardown_s() -> float:
    """What Prefect's flow-run heartbeat thread adds when a flow call returns (it sleeps in 1 s steps)."""
    from prefect import flow
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    @flow
    def nothing() -> None:
        return None

    times = {}
    for beat in (180, None):
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: beat}):
            runs = []
            for _ in range(3):
                started = time.perf_counter()
                nothing()
                runs.append(time.perf_counter() - started)
        times[beat] = min(runs)
    return times[180] - times[None]


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def build_beside_test_s(app_name: str, sha: str, component: str) -> float:
    """The one-file PR's floor: the component's own build commands beside its test command (as the PR runs them,
    ``test_after_build: false``), in a clone of ``sha`` whose dependency tree was restored from the warm cache
    before the clock starts; nothing else. The PR's work that no orchestration can remove."""
    from prefect.logging import disable_run_logger

    from blocks import Application
    from opsflow.core.proc import run
    from tasks.build.app import component_dir
    from tasks.build.caches import TreeCache
    from tasks.build.deps import install_deps
    from tasks.build.env import build_environment
    from tasks.git import clone_repo
    from tasks.workspace import cleanup_workspace

    with disable_run_logger():
        comp = (app := Application.load(app_name)).component(component)
        cache = TreeCache.from_env()
        checkout = clone_repo.fn(app.repository, sha)
        try:
            install_deps.fn(checkout, comp, cache)
            env, cwd = build_environment(checkout, cache), component_dir(checkout, comp)

            def in_turn(*argvs: list[str]) -> None:
                for argv in argvs:
                    run(argv, cwd=cwd, env=env, isolated=True, timeout=600)

            started = time.perf_counter()
            with ThreadPoolExecutor(2) as pool:
                for done in [pool.submit(in_turn, *comp.build_commands), pool.submit(in_turn, comp.test_command)]:
                    done.result()
            return time.perf_counter() - started
        finally:
            cleanup_workspace.fn([checkout.root])


def incremental(bench: Bench, rounds: int, root: Path) -> dict:
    """Cold PR (empty dependency cache) vs a one-file PR after it (warm cache), and the one-file PR's floor."""
    from flows.gitops_pr import gitops_pr

    cold, warm, floor = [], [], []
    for i in range(rounds):
        os.environ["OPSFLOW_CACHE_DIR"] = str(root / f"cache-{i}")  # a build server that never installed
        head, _ = bench.fresh_commit()
        started = time.perf_counter()
        gitops_pr(app="bench-shop", pr=bench.n, sha=head, return_state=True).result()
        cold.append(time.perf_counter() - started)
        bench.n += 1
        bench.repo.write("backend/src/catalog.ts", bench.repo.read("backend/src/catalog.ts") + f"// round {i}\n")
        head = bench.repo.commit(f"one file, round {i}", branch=f"bench-{bench.n}")
        started = time.perf_counter()
        gitops_pr(app="bench-shop", pr=bench.n, sha=head, return_state=True).result()
        warm.append(time.perf_counter() - started)
        floor.append(build_beside_test_s("bench-shop", head, "backend"))
        print(f"PR cold (empty caches) {cold[-1]:.2f}s  PR after it, one file changed {warm[-1]:.2f}s  its build "
              f"beside its tests alone {floor[-1]:.2f}s", flush=True)
    os.environ.pop("OPSFLOW_CACHE_DIR", None)
    return {"incremental_pr_ratio": round(_median(warm) / _median(cold), 3),
            "pr_cold_cache_s": [round(x, 2) for x in cold], "pr_incremental_s": [round(x, 2) for x in warm],
            "incremental_floor_ratio": round(_median(floor) / _median(cold), 3),
            "pr_incremental_floor_s": [round(x, 2) for x in floor]}


def merge_in_one_flow_run(app, store, merge_sha: str) -> None:
    """``plain_merge`` inside one Prefect flow run (created, named, started and ended as the merge flow's is; no
    task runs, no report): the least the merge costs with Prefect's run around it."""
    from prefect import flow

    from flows.options import UNPERSISTED_RESULT

    @flow(name="bench-merge-one-flow-run", flow_run_name=f"bench-merge-{merge_sha:.7}", **UNPERSISTED_RESULT)
    def one_flow_run() -> None:
        plain_merge(app, store, merge_sha)

    one_flow_run()


def plain_build_push(contexts: dict[str, tuple[Path, dict[str, str]]], tag: str) -> None:
    """``docker build`` + ``docker push`` of each context, one thread each, with the CLI opsflow chose."""
    from blocks import ContainerRegistry, DockerHostTarget
    from opsflow.core.proc import run, scrubbed_environment
    from tasks.images.build import choose_builder

    engine = DockerHostTarget.load("build-server")
    registry = ContainerRegistry.load("local-registry")
    builder = choose_builder(engine)
    cli = builder.argv[0] if builder.argv else "docker"
    config = tempfile.mkdtemp(prefix="bench-docker-config-")  # the login a plain script needs: `docker login`
    env = scrubbed_environment(tempfile.gettempdir(), {"DOCKER_HOST": engine.base_url, "DOCKER_CONFIG": config,
                                                       **dict(builder.env)})
    if registry.username:
        run([cli, "login", "-u", registry.username, "--password-stdin", registry.host], env=env, isolated=True,
            timeout=60, stdin_text=registry.password.get_secret_value())

    def one(item):
        name, (context, args) = item
        ref = f"{registry.repository('bench-plain-' + name)}:{tag}"
        argv = [*(builder.argv or (cli, "build")), "-q", "-t", ref, *[a for k, v in args.items()
                                                                      for a in ("--build-arg", f"{k}={v}")]]
        run([*argv, str(context)], env=env, isolated=True, timeout=600)
        run([cli, "push", "-q", ref], env=env, isolated=True, timeout=600)

    try:
        with ThreadPoolExecutor(len(contexts)) as pool:
            list(pool.map(one, contexts.items()))
    finally:
        shutil.rmtree(config, ignore_errors=True)


def merge_vs_plain(bench: Bench, rounds: int) -> dict:
    """The merge flow vs plain docker build + push of the same contexts."""
    from prefect.logging import disable_run_logger

    from blocks import Application, DockerHostTarget, ObjectStore
    from flows.gitops_merge import gitops_merge
    from flows.gitops_pr import gitops_pr
    from tasks.artifacts.store import artifact_key, load_artifact
    from tasks.images.base import ensure_base_image

    app = Application.load("bench-shop")
    store = ObjectStore.load("opsflow-artifacts")
    engine = DockerHostTarget.load("build-server")
    with disable_run_logger():
        bases = {f"opsflow:{k}": ensure_base_image.fn(engine, k) for k in ("busybox", "node")}
    flow_s, plain_s, floor_s, one_run_s = [], [], [], []
    for i in range(rounds):
        head, merge_sha = bench.fresh_commit()
        gitops_pr(app="bench-shop", pr=bench.n, sha=head, return_state=True).result()
        started = time.perf_counter()
        gitops_merge(app="bench-shop", sha=merge_sha)
        flow_s.append(time.perf_counter() - started)
        contexts = {}
        with disable_run_logger():
            for comp in app.components:
                key = artifact_key(app.name, comp, bench.repo.tree(merge_sha, comp.path))
                contexts[comp.name] = (load_artifact.fn(store, key).path, {"BASE_IMAGE": bases[comp.base_image]})
        started = time.perf_counter()
        plain_build_push(contexts, f"round-{bench.n}-{i}")
        plain_s.append(time.perf_counter() - started)
        for merge, times in ((plain_merge, floor_s), (merge_in_one_flow_run, one_run_s)):
            head, merge_sha = bench.fresh_commit()  # a commit of its own: its images are not in the registry yet
            gitops_pr(app="bench-shop", pr=bench.n, sha=head, return_state=True).result()
            started = time.perf_counter()
            merge(app, store, merge_sha)
            times.append(time.perf_counter() - started)
        print(f"merge flow {flow_s[-1]:.2f}s  plain docker build + push {plain_s[-1]:.2f}s  the merge's work without "
              f"Prefect {floor_s[-1]:.2f}s, in one flow run {one_run_s[-1]:.2f}s", flush=True)
    return {"merge_ratio": round(_median(flow_s) / _median(plain_s), 3), "merge_flow_s": [round(x, 2) for x in flow_s],
            "plain_build_push_s": [round(x, 2) for x in plain_s],
            "merge_floor_ratio": round(_median(floor_s) / _median(plain_s), 3),
            "merge_floor_s": [round(x, 2) for x in floor_s],
            "merge_one_flow_run_ratio": round(_median(one_run_s) / _median(plain_s), 3),
            "merge_one_flow_run_s": [round(x, 2) for x in one_run_s]}


def nextjs(root: Path, docker_client_url: str) -> dict:
    """The Next.js storefront sample: a cold PR (empty caches), a one-file PR after it, the merge vs plain
    docker build + push of the same context, and its image serving."""
    import re

    import docker
    import httpx
    from prefect.logging import disable_run_logger

    from blocks import ObjectStore
    from flows.gitops_merge import gitops_merge
    from flows.gitops_pr import gitops_pr
    from opsflow.samples import STOREFRONT_SOURCE, SampleRepo, save_app_block, storefront_component
    from tasks.artifacts.store import artifact_key, load_artifact
    from tasks.images.base import base_image_tag

    client = docker.DockerClient(base_url=docker_client_url)
    client.images.get(base_image_tag("node")).tag("node", "20-alpine")
    repo = SampleRepo(root / "storefront", STOREFRONT_SOURCE)
    repo.write("public/bench.txt", f"{time.time()}\n")  # a tree no earlier run has built
    repo.commit("initial")
    app = save_app_block(repo.url, "bench-storefront", [storefront_component()])
    os.environ["OPSFLOW_CACHE_DIR"] = str(root / "cache-nextjs")  # cold: nothing installed on this server yet
    head = repo.commit("a change", branch="feature")
    started = time.perf_counter()
    gitops_pr(app=app.name, pr=1, sha=head, return_state=True).result()
    cold_s = time.perf_counter() - started
    repo.write("app/products.js", repo.read("app/products.js") + "// one more line\n")
    head = repo.commit("one file", branch="feature")
    started = time.perf_counter()
    gitops_pr(app=app.name, pr=1, sha=head, return_state=True).result()
    incremental_s = time.perf_counter() - started
    os.environ.pop("OPSFLOW_CACHE_DIR", None)
    merge_sha = repo.merge("feature")
    started = time.perf_counter()
    [row] = gitops_merge(app=app.name, sha=merge_sha)
    merge_s = time.perf_counter() - started
    with disable_run_logger():
        key = artifact_key(app.name, app.components[0], repo.tree(merge_sha, ""))
        context = load_artifact.fn(ObjectStore.load("opsflow-artifacts"), key).path
    started = time.perf_counter()
    plain_build_push({"storefront": (context, {})}, "plain-1")
    plain_s = time.perf_counter() - started
    container = client.containers.run(row["image_ref"], detach=True, network_mode="host",
                                      environment={"PORT": "34799", "HOSTNAME": "127.0.0.1"})
    serves = False
    try:
        for _ in range(150):
            try:
                health = httpx.get("http://127.0.0.1:34799/api/health", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            page = httpx.get("http://127.0.0.1:34799/", timeout=5)
            chunk = next(iter(re.findall(r'/_next/static/[^"]+\.js', page.text)), None)
            serves = health.status_code == 200 and chunk is not None and \
                httpx.get(f"http://127.0.0.1:34799{chunk}", timeout=5).status_code == 200 and \
                httpx.get("http://127.0.0.1:34799/logo.svg", timeout=5).status_code == 200
            break
    finally:
        container.remove(force=True)
    print(f"Next.js storefront: PR cold {cold_s:.1f}s, one-file PR {incremental_s:.1f}s, merge {merge_s:.1f}s vs "
          f"plain build + push {plain_s:.1f}s, image serves: {serves}", flush=True)
    return {"nextjs_pr_cold_s": round(cold_s, 2), "nextjs_pr_incremental_s": round(incremental_s, 2),
            "nextjs_incremental_pr_ratio": round(incremental_s / cold_s, 3), "nextjs_merge_s": round(merge_s, 2),
            "nextjs_plain_build_push_s": round(plain_s, 2), "nextjs_merge_ratio": round(merge_s / plain_s, 3),
            "nextjs_serves": serves}


def flow_call_s() -> float:
    """What one Prefect flow call with one task costs here (no work): the fixed part of every flow figure."""
    from prefect import flow, task

    @task
    def nothing() -> None:
        return None

    @flow
    def one_task() -> None:
        nothing()

    runs = []
    for _ in range(3):
        started = time.perf_counter()
        one_task()
        runs.append(time.perf_counter() - started)
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds of each side (best is kept)")
    parser.add_argument("--only", default="overhead,rerun,parallel,incremental,merge",
                        help="comma-separated parts to run (overhead, rerun, parallel, incremental, merge)")
    parser.add_argument("--nextjs", action="store_true", help="also run the Next.js storefront sample")
    args = parser.parse_args()
    parts = set(args.only.split(","))

    # Before Prefect is imported: this process is a client of the stack's server, never an ephemeral one.
    from opsflow.core.prefect_api import use_local_stack

    use_local_stack()
    from opsflow.stack import Stack, StackConfig
    from opsflow.worker.prefect_adapter import prompt_heartbeat_stop, share_client_tls_contexts

    # The flows run in this process as in the worker's run process, which stops a run's heartbeat thread
    # when the run ends (without it, each flow call here ends up to 1 s late: heartbeat_teardown_s) and
    # whose Prefect clients share the TLS context the worker's zygote built (each client built its own).
    prompt_heartbeat_stop()
    share_client_tls_contexts()

    cfg = StackConfig.from_env()
    Stack(cfg, say=lambda line: print(f"[stack] {line}", file=sys.stderr)).up()
    result: dict = {"rounds": args.rounds}
    with tempfile.TemporaryDirectory(prefix="opsflow-bench-") as tmp:
        from flows.gitops_pr import gitops_pr

        bench = Bench(Path(tmp))
        print("warm-up (npm cache, base images) ...", flush=True)
        bench.flows("bench-shop")
        if "overhead" in parts:
            bench.plain("bench-shop")
            flow_s, plain_s = [], []
            for i in range(args.rounds):
                plain_s.append(bench.plain("bench-shop"))
                flow_s.append(bench.flows("bench-shop")[0])
                print(f"round {i + 1}: plain {plain_s[-1]:.2f}s  flows {flow_s[-1]:.2f}s", flush=True)
            result.update({"overhead_ratio": round(min(flow_s) / min(plain_s), 3),
                           "overhead_s": round(min(flow_s) - min(plain_s), 2),
                           "flows_s": [round(s, 2) for s in flow_s], "plain_s": [round(s, 2) for s in plain_s]})
        if "rerun" in parts:
            cold, rerun, cold_server, rerun_server = [], [], [], []
            for _ in range(args.rounds):
                seconds, head, server = bench.flows("bench-shop", merge=False)
                started = time.perf_counter()
                state = gitops_pr(app="bench-shop", pr=bench.n, sha=head, return_state=True)
                rerun.append(time.perf_counter() - started)
                cold.append(seconds)
                cold_server.append(server)
                rerun_server.append(server_seconds(state))
                print(f"PR cold {cold[-1]:.2f}s  PR rerun {rerun[-1]:.2f}s  (server-recorded {cold_server[-1]:.2f}s / "
                      f"{rerun_server[-1]:.2f}s)", flush=True)
            result.update({"rerun_ratio": round(min(rerun) / min(cold), 3),
                           "rerun_ratio_server": round(min(rerun_server) / min(cold_server), 3),
                           "pr_cold_s": [round(s, 2) for s in cold], "pr_rerun_s": [round(s, 2) for s in rerun]})
        if "parallel" in parts:
            one, two, plain_one, plain_two = [], [], [], []
            for _ in range(args.rounds):
                one.append(bench.flows("bench-shop-one", merge=False)[0])
                two.append(bench.flows("bench-shop", merge=False)[0])
                plain_one.append(bench.plain("bench-shop-one", merge=False))
                plain_two.append(bench.plain("bench-shop", merge=False))
                print(f"PR one component {one[-1]:.2f}s  two components {two[-1]:.2f}s  (plain script: "
                      f"{plain_one[-1]:.2f}s / {plain_two[-1]:.2f}s)", flush=True)
            result.update({"parallel_ratio": round(min(two) / min(one), 3),
                           "parallel_ratio_plain": round(min(plain_two) / min(plain_one), 3),
                           "one_component_s": [round(s, 2) for s in one],
                           "two_components_s": [round(s, 2) for s in two],
                           "plain_one_component_s": [round(s, 2) for s in plain_one],
                           "plain_two_components_s": [round(s, 2) for s in plain_two]})
        if "incremental" in parts:
            result.update(incremental(bench, args.rounds, Path(tmp)))
        if "merge" in parts:
            result.update(merge_vs_plain(bench, args.rounds))
            result["flow_call_s"] = round(flow_call_s(), 2)
        if args.nextjs:
            import json as _json

            result.update(nextjs(Path(tmp), _json.loads(cfg.state_file.read_text())["services"]["docker"]["url"]))
        if "overhead" in parts:
            result["heartbeat_teardown_s"] = round(heartbeat_teardown_s(), 2)
    result["targets"] = {"overhead_ratio": 1.15, "overhead_s": 2.0, "rerun_ratio": 0.10, "parallel_ratio": 1.3,
                         "incremental_pr_ratio": 0.4, "merge_ratio": 1.3}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
