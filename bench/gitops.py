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
  recorded; ``heartbeat_teardown_s``: the wait Prefect's heartbeat thread adds when a flow call
  returns (it sleeps in 1 s steps), included in every wall-clock figure above.

Prints one line per measurement and a final line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
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

    from blocks import Application, ContainerRegistry, DockerHostTarget, ObjectStore
    from flows.gitops_merge import branch_tag
    from tasks.app_tests import run_tests
    from tasks.artifacts.store import load_artifact, plan_artifact, record_test_results, save_artifact
    from tasks.build import build_app
    from tasks.env_files import fetch_env_files, redaction_list
    from tasks.git import clone_repo
    from tasks.images.base import ensure_base_image
    from tasks.images.build import build_image
    from tasks.images.prune import prune_build_images
    from tasks.images.push import push_image
    from tasks.registry.lookup import lookup_image
    from tasks.workspace import cleanup_workspace

    with disable_run_logger():
        app = Application.load(app_name)
        store = ObjectStore.load("opsflow-artifacts")
        secrets = {e.secret_block: Secret.load(e.secret_block) for e in app.env_files}
        # pull request
        checkout = clone_repo.fn(app.repository, head)
        written = fetch_env_files.fn(checkout, app.env_files, secrets)
        redact = redaction_list(checkout, written)

        def pr_component(comp):
            plan = plan_artifact.fn(store, checkout, app.name, comp)
            build = build_app.fn(checkout, comp, redact)
            ref = save_artifact.fn(store, plan, build, comp, checkout)
            report = run_tests.fn(checkout, comp, redact)
            record_test_results.fn(store, ref.key, report.summary())

        with ThreadPoolExecutor(len(app.components)) as pool:
            list(pool.map(pr_component, app.components))
        cleanup_workspace.fn([checkout.path])
        if not merge:
            return
        # merge
        registry = ContainerRegistry.load("local-registry")
        engine = DockerHostTarget.load("build-server")
        checkout = clone_repo.fn(app.repository, merge_sha)
        tags = [merge_sha, branch_tag("main")]
        bases = {f"opsflow:{k}": ensure_base_image.fn(engine, k) for k in ("busybox", "node")}

        def merge_component(comp):
            plan = plan_artifact.fn(store, checkout, app.name, comp)
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
        cleanup_workspace.fn([checkout.path])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds of each side (best is kept)")
    args = parser.parse_args()

    # Before Prefect is imported: this process is a client of the stack's server, never an ephemeral one.
    from opsflow.core.prefect_api import use_local_stack

    use_local_stack()
    from opsflow.stack import Stack, StackConfig

    cfg = StackConfig.from_env()
    Stack(cfg, say=lambda line: print(f"[stack] {line}", file=sys.stderr)).up()
    with tempfile.TemporaryDirectory(prefix="opsflow-bench-") as tmp:
        from flows.gitops_pr import gitops_pr

        bench = Bench(Path(tmp))
        print("warm-up (npm cache, base images) ...", flush=True)
        bench.flows("bench-shop")
        bench.plain("bench-shop")

        flow_s, plain_s = [], []
        for i in range(args.rounds):
            plain_s.append(bench.plain("bench-shop"))
            flow_s.append(bench.flows("bench-shop")[0])
            print(f"round {i + 1}: plain {plain_s[-1]:.2f}s  flows {flow_s[-1]:.2f}s", flush=True)

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

        one, two, plain_one, plain_two = [], [], [], []
        for _ in range(args.rounds):
            one.append(bench.flows("bench-shop-one", merge=False)[0])
            two.append(bench.flows("bench-shop", merge=False)[0])
            plain_one.append(bench.plain("bench-shop-one", merge=False))
            plain_two.append(bench.plain("bench-shop", merge=False))
            print(f"PR one component {one[-1]:.2f}s  two components {two[-1]:.2f}s  (plain script: "
                  f"{plain_one[-1]:.2f}s / {plain_two[-1]:.2f}s)", flush=True)
        teardown = heartbeat_teardown_s()

    result = {
        "overhead_ratio": round(min(flow_s) / min(plain_s), 3),
        "overhead_s": round(min(flow_s) - min(plain_s), 2),
        "rerun_ratio": round(min(rerun) / min(cold), 3),
        "parallel_ratio": round(min(two) / min(one), 3),
        "rerun_ratio_server": round(min(rerun_server) / min(cold_server), 3),
        "parallel_ratio_plain": round(min(plain_two) / min(plain_one), 3),
        "heartbeat_teardown_s": round(teardown, 2),
        "flows_s": [round(s, 2) for s in flow_s], "plain_s": [round(s, 2) for s in plain_s],
        "pr_cold_s": [round(s, 2) for s in cold], "pr_rerun_s": [round(s, 2) for s in rerun],
        "one_component_s": [round(s, 2) for s in one], "two_components_s": [round(s, 2) for s in two],
        "plain_one_component_s": [round(s, 2) for s in plain_one],
        "plain_two_components_s": [round(s, 2) for s in plain_two],
        "rounds": args.rounds,
        "targets": {"overhead_ratio": 1.15, "overhead_s": 2.0, "rerun_ratio": 0.10, "parallel_ratio": 1.3},
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
