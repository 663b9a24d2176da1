"""Manual deploy benchmark: rollback, a deploy against plain `docker run`, fan-out, blue-green switches,
and compose-project edge nodes against `docker-compose up -d` by hand.

    uv run python bench/deploy.py [--rounds 5]

Uses the stack of ``opsflow stack up`` (started if needed; ports from the OPSFLOW_* variables). Run it
as root: it starts edge-node engines (tests/support/edge_nodes.py). The web images are busybox httpd
(``STOPSIGNAL SIGKILL``: busybox httpd as PID 1 ignores SIGTERM, so every stop would otherwise wait
Docker's 10 s stop timeout): two good versions and a bad one without /healthz.

On the stack's engine, as a host-networked target (the old container stops before the new one starts):

* ``rollback_s``: from the last answer of the bad version (its health gate has given up and it is
  being removed) to the first answer of the old version again (a prober every 20 ms); median.
* ``deploy_ratio``: a rolling deploy of one component (``manual_deploy`` called in this process, set up
  as the edge worker's run process is: ``share_client_tls_contexts`` and ``prompt_heartbeat_stop`` of
  opsflow/worker/prefect_adapter.py; alternating good/good2; the run's wall time, Prefect's flow-run
  engine included) vs the same
  replacement as a plain script does it: ``docker rm -f`` + ``docker run -d`` (the docker CLI) +
  polling the health URL every 20 ms until it answers; medians of ``--rounds`` interleaved pairs.
  Target <= 2.0. ``deploy_sdk_ratio``: the same against the Docker SDK instead of the CLI.
  ``deploy_floor_ratio``: the same deploy with nothing in the UI but its flow run (a counterfactual measured
  in this process only: its task runs called as plain functions, ``Task.fn``, and its plan and results
  artifacts skipped; the blocks, the deploy lock, the registry lookup, the Docker work, the health gate and
  the deploy record as always), against the same plain script: the least a flow run of this deploy costs.
  ``deploy_surge_s``: the same deploy on ``edge-local`` (bridge networking: the new container starts
  beside the old one behind the proxy, then the old one drains and goes).

On four edge nodes (extra engines with bridge networking):

* ``fanout_ratio``: a rolling deploy to all 4 nodes in one run vs the same deploy to 1 node;
  ``fanout_speedup_vs_one_at_a_time``: the 4-node deploy with ``max_parallel=1`` vs 4. All four
  engines share this machine's cores, which a real fleet does not.
* ``failed_probes_during_switch``: failed reads of a prober hitting node 1's public port every 50 ms
  during ``--rounds`` x 2 blue-green switches good <-> good2.

On a fifth node, a compose project of three services (``web`` = the app, ``cache``, ``worker``):

* ``compose_update_s``: ``manual_deploy`` of ``web`` (rolling: compose recreates it) until healthy;
  ``compose_by_hand_s``: the same change by hand (the image line edited, ``docker-compose up -d web``,
  the health URL polled); ``compose_ratio`` = their medians' ratio, target <= 1.3.
* ``compose_failed_probes_during_switch``: blue-green switches on a compose project (the service
  behind opsflow's proxy) with a prober every 50 ms; target 0.

Prints one line per round and a final line ``RESULT {json}``.

Measured here (2 cores shared with other engineers' test runs; ``--rounds 3``; Prefect on PostgreSQL).
Before (main at d1503ef, load average 7-9): ``rollback_s`` 0.28, ``deploy_ratio`` 5.9 (2.03 s vs 0.35 s),
``deploy_surge_s`` 2.8, ``compose_ratio`` 1.96 (4.57 s vs 2.33 s), ``failed_probes_during_switch`` 0 of
373 and ``compose_failed_probes_during_switch`` 0 of 642, ``fanout_ratio`` 2.0.

After cutting the overhead (one Prefect client for all task runs of a run, TLS contexts built once,
engine reads, registry lookups, compose diff, lock creation and deploy record as plain calls), the
same command ``--parts host,compose --rounds 3`` run against main and this tree in turn on one stack
(load average 3-14, so the ratios of two runs differ by up to 40 %): ``deploy_s`` 2.92 s median of
three runs before (4.52, 2.71, 2.92), 2.19 s after (2.62, 2.19, 1.58); ``deploy_ratio`` 9.4, 6.7, 6.5
before, 7.0, 4.9, 5.8 after; ``compose_ratio`` 2.52, 2.32, 2.40 before, 1.98, 1.82, 1.65 after;
``deploy_surge_s`` 4.5 before, 2.4 after; no failed probe in either. Two ``--parts host --rounds 3``
pairs when the machine went quiet (load 0.4-2), agreeing within 6 %: ``deploy_ratio`` 6.3 and 5.9
before (1.43 s, 1.12 s vs 0.23 s, 0.19 s), 4.1 and 4.3 after (1.01 s, 0.82 s vs 0.25 s, 0.19 s);
``deploy_surge_s`` 1.96, 1.68 before, 1.58, 1.23 after; ``rollback_s`` 0.18-0.23 in all. The figure that does not move
with the load is the process's CPU per deploy (6 deploys on one host target, load 2.7): 0.71 s
before, 0.33 s after (wall 1.5 s before, 1.1 s after, against 0.27-0.35 s for the plain
``docker run``). The targets for the two ratios (2.0, 1.3) are still not met. What is left, per
deploy at load ~3 (about 1.1 s): Prefect's flow-run engine before the flow body runs, 0.25-0.3 s
(create the flow and the run, three reads of the server's default result storage, two of them on
new API clients with a TLS context each, state proposals); the four block loads 0.1 s; the plan
artifact and the results artifact, one POST each; the deploy lock through ``concurrency()``
(the increment through Prefect's acquisition service, a lease renewal at once, and the release on
a new API client: TLS context, CSRF token, decrement), 0.1 s; the Docker work itself (stop, create,
start, health) 0.3 s, as the plain script's; each remaining task run (plan, deploy-to-target,
rollout) about 16 ms of CPU. At load 10 each of these takes 3-4 times as long.

Next (issues 18/19), with the process set up as the edge worker's run process is (shared client TLS
context: five contexts per deploy, 0.1-0.15 s each at load 15, were built in this process before): the
engine no longer reads the server's default result storage (two round trips), the deploy lock is taken
while the blocks load and given back while the results are published, the plan is published beside the
deploy, the old container stops while the new one is created, probes poll from 10 ms. Timeline of one
deploy at load 15 (3.4-4.8 s in all): flow run created, named and Running 0.9 s; four block loads 0.8-1.1 s
(the lock beside them); engine read, registry lookup, plan submitted 0.3 s; rollout 1.0 s (the plain
script's docker calls take as long); record 0.03 s; results artifact 0.5 s (the lock's release beside it);
final state 0.4 s. The Prefect server on the shared cores answers each request in 0.1-0.5 s there: the
remaining overhead is those six round trips one after the other, and Prefect's CPU (0.15-0.2 s per deploy,
most of it in the flow and task engines and the API client). The machine stayed at load 10-22 for the whole
session (other engineers' suites), so the old and new code were compared in one run, deploys of each
alternating in two long-lived processes, with the plain commands between them (8 rounds): at load 18
``deploy_ratio`` 6.8 before, 4.9 after (4.93 s, 3.55 s vs 0.72 s), ``compose_ratio`` 1.65 before, 1.45
after (9.0 s, 7.9 s vs 5.5 s); at load 10-17, 6.4 and 5.3 (2.99 s, 2.49 s vs 0.47 s), 1.41 and 1.33
(12.9 s, 12.2 s vs 9.2 s: ``docker-compose`` itself took 7-11 s there). This command on the same stack
before: ``deploy_ratio`` 4.83 (5.0 s vs 1.04 s, load 12), ``compose_ratio`` 1.72; after (load 14-22):
5.76 and 6.11 (7.9 s vs 1.38 s, 5.9 s vs 0.97 s), 1.65 and 1.38; single runs follow the load more than
the code. No failed probe in any switch. The targets (2.0, 1.3) are still not met at these loads.

Next (quiet machine, load 1-4, the default stack): the run's blocks are read in one request
(``blocks/loading.py``; four reads side by side took 130-200 ms beside the deploy lock, the one request 55-75 ms),
and this process asks the server for no CSRF token, as the edge worker's run process. The plain side's health
client is made once: before, each plain round built an httpx client (a TLS context, 30-50 ms of CPU) inside its
timing, which opsflow's side never paid, so the ``compose_ratio`` figures above were too low by about that
(measured alone, before/after that fix, same code: 1.34 and 1.42 before, 1.49 and 1.54 after). Traced with every
request timed (a compose update, 1.49 s in all): the flow run created, named, Running and read 0.09 s; the blocks
0.05-0.08 s (the lock beside them); engine read and registry lookup 0.03 s; the plan and the task runs 0.05 s;
``docker-compose up -d --no-deps web`` 1.13-1.24 s (the plain side's whole round, compose and health, took
1.06-1.12 s: compose runs slower beside the plan's artifact, the run's logs and events, which load the same
two cores); health 0.01 s; the results artifact with the lock's release 0.04 s; the final state 0.03 s. Fresh
clone at f5d68f6, ``--parts host,compose --rounds 3``, load 1-3: ``deploy_ratio`` 3.18 (0.46 s vs 0.15 s),
``compose_ratio`` 1.56 (1.82 s vs 1.17 s), ``rollback_s`` 0.15, no failed probe of 266; the targets are not met.

Compose v1 without setuptools' ``distutils`` shim (``tasks/deploy/compose.py``): ``docker-compose`` imported
setuptools and ``pkg_resources`` on every call through Debian's ``distutils-precedence.pth`` (``docker-compose
version`` 0.46 s, 0.25 s with ``SETUPTOOLS_USE_DISTUTILS=stdlib``). Fresh clone at e4f7fe4 on the default
stack, default arguments (a fresh shell, ``env -i``): ``compose_ratio`` 1.149 (1.234 s vs 1.074 s), no failed
probe of 367 on compose nodes nor of 266 in the edge switches; ``deploy_ratio`` 2.80 (0.651 s vs 0.232 s),
``fanout_ratio`` 2.28. The plain side runs ``docker-compose`` as a user types it (with the shim). With the
variable set for both sides (``SETUPTOOLS_USE_DISTUTILS=stdlib uv run python bench/deploy.py --parts compose``),
plain compose gains as much: 0.77 s against opsflow's 1.33 s, ratio 1.72; what opsflow adds is the ~0.5 s traced
above (the flow run's round trips, the blocks, the plan artifact, compose slowed by the run's own work beside it).
The closing check (fresh clone at 949eb05, default stack, default arguments, load 3-4): ``compose_ratio`` 1.277
(1.369 s vs 1.072 s; rounds 1.56/1.01, 1.31/1.07, 1.15/0.97, 1.30/1.16, 1.39/1.16), no failed probe of 372 on
compose nodes nor of 319 in the edge switches, ``deploy_ratio`` 2.95 (0.579 s vs 0.196 s), ``fanout_ratio`` 2.28.

Where a deploy's time goes now (default stack, quiet, traced with every request and Docker call timed, 0.38-0.40 s
in all): the engine creates, names, starts and reads the run 0-64 ms; the blocks (read from the call on, since a
``flows.options.flow`` starts its declared reads when called) are there ~25 ms into the body; the engine read and the
registry lookup 20 ms; the checks, the plan's submission and the two task runs' start 30 ms; the rename, ``stop`` while
``create``, ``start`` and the first probe 145 ms, as long as the whole plain script (0.15 s); then the old container's
removal, the record, the results artifact beside the lock's release and the final state, 70-85 ms. The Prefect server
is one Python process (several need Redis): per deploy it spent 0.20-0.25 s of CPU, against 0.12 s for this process,
so requests sent side by side mostly queue behind each other there. The in-process early read gained 14 ms (alternating
10 deploys x 3: medians 396 ms with it, 410 ms without), not the 40 ms it hides in a worker's run process. Floors,
measured with empty async flows in this process: a flow run 88 ms (75 ms of server CPU), a custom run name +12 ms,
each task run ~27 ms (30 ms of server CPU, most of it the task run recorder compiling its insert for each event: Prefect
records task runs one at a time by default). Batching that recorder (``PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_
BATCH_SIZE=50``, flush every 1 s) cut a task run's server CPU to ~13 ms and the merge flow by ~10 % (``bench/gitops.py
--only merge --rounds 4``: 0.70-0.80 s against 0.80-0.96 s), but not this deploy (0.40-0.42 s), and task runs then
reach the API and the UI up to a second late; not adopted. With a flow run, a named run and three task runs (plan,
deploy to the target, rollout) the Prefect floor is ~0.2 s before any work: the 2.0 target (0.30 s against 0.15 s)
would leave under 10 ms for the blocks, the lock, the registry and the two artifacts.

The floor, measured (``deploy_floor_ratio``; default stack, quiet, ``--parts host --rounds 5``): the same deploy with
nothing in the UI but its flow run took 0.30 s against 0.13 s for the plain script (2.26), the deploy itself 0.37 s
(2.74). Traced (no task runs, no artifacts, 0.32 s in all): the engine before the body 92 ms (``POST /flows/`` 12 ms,
``POST /flow_runs/`` 24, the parameters validated 6, the name's ``PATCH`` 5, ``set_state`` 19, the run read again 14);
the checks, the engine read and the registry lookup 40 ms (the lock's increment beside them); the rename, ``stop``
beside ``create``, ``start`` and the first probe 130 ms; the old container's removal, the record, the lock's release and
the final state 50 ms. The 2.0 target is below a flow run of this deploy even without its three task runs and its
two artifacts.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parts", default="host,edges,compose", help="host (rollback, deploy_ratio), edges "
                        "(fan-out, blue-green), compose (compose projects); comma separated")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    # The stack's server, before Prefect is imported (else a run would start a temporary server).
    from opsflow.core.prefect_api import use_local_stack

    use_local_stack()
    csrf_as_the_worker()

    from blocks import DockerHostTarget
    from opsflow.stack import Stack, StackConfig
    from opsflow.worker.prefect_adapter import prompt_heartbeat_stop, share_client_tls_contexts

    # The flow runs in this process as in the edge worker's run process (forked from its zygote): Prefect's
    # API clients share one TLS context (without it every client a run opens builds its own, 26 ms of CPU,
    # 0.1-0.15 s at load 15: five per deploy) and a run's heartbeat thread stops when the run ends.
    share_client_tls_contexts()
    prompt_heartbeat_stop()
    from tests.support.net import free_port
    from tests.support.web_app import push_web_app

    cfg = StackConfig.from_env()
    Stack(cfg, say=lambda line: print(f"[stack] {line}", file=sys.stderr)).up()
    uid = uuid.uuid4().hex[:6]
    app, port = f"bench-dep-{uid}", free_port()
    edge = DockerHostTarget.load("edge-local")
    host = DockerHostTarget(name=f"bench-host-{uid}", base_url=edge.base_url, network_mode="host")
    host.save(host.name, overwrite=True)
    push_web_app(app, port, {"good": True, "good2": True, "bad": False}, deadline_s=3, source="bench")
    result: dict = {}
    try:
        if "host" in parts:
            result.update(rollback_benchmark(app, port, host.name, args.rounds))
            result.update(deploy_ratio_benchmark(app, port, host, args.rounds))
    finally:
        client = edge.get_client()
        for container in client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"}):
            container.remove(force=True)
        for network in client.networks.list(filters={"label": f"org.opsflow.app={app}"}):
            network.remove()  # else each run leaves one and the engine runs out of address pools
        client.close()
    if parts & {"edges", "compose"}:
        result.update(edge_benchmarks(app, port, args.rounds, parts))
    print("RESULT " + json.dumps(result), flush=True)


def csrf_as_the_worker() -> None:
    """Before Prefect is imported: as the edge worker's run process, whose zygote runs with
    ``PREFECT_CLIENT_CSRF_SUPPORT_ENABLED=false`` when the server has no CSRF protection
    (opsflow/worker/prefect_adapter.py): a run's clients then ask no CSRF token before their first change."""
    import httpx

    from opsflow.core.prefect_api import basic_auth_header

    api = os.environ["PREFECT_API_URL"].rstrip("/")
    auth = os.environ.get("PREFECT_API_AUTH_STRING")
    answer = httpx.get(f"{api}/csrf-token", params={"client": "bench"}, timeout=30,
                       headers=basic_auth_header(auth) if auth else {})
    if answer.status_code == 422 and "disabled" in answer.text:
        os.environ["PREFECT_CLIENT_CSRF_SUPPORT_ENABLED"] = "false"


def manual_deploy(**kwargs):
    """Run the (async) manual-deploy flow in this process; returns its result."""
    import asyncio

    from flows.manual_deploy import manual_deploy as flow

    return asyncio.run(flow(**kwargs))


def rollback_benchmark(app: str, port: int, target: str, rounds: int) -> dict:
    from tests.support.edge_nodes import Prober

    manual_deploy(app=app, version="good", targets=[target])
    rollbacks = []
    for i in range(rounds):
        with Prober(f"http://127.0.0.1:{port}/index.html", interval=0.02, timeout=0.5) as prober:
            try:
                manual_deploy(app=app, version="bad", targets=[target])
                raise AssertionError("the bad version was deployed")
            except Exception as exc:  # noqa: BLE001 - the failed deploy is the point
                assert "rolled back" in str(exc), exc
            time.sleep(0.5)
        last_bad = max(t for t, body in prober.stamps if body == "bad")
        back = min(t for t, body in prober.stamps if body == "good" and t > last_bad)
        rollbacks.append(back - last_bad)
        print(f"round {i + 1}: old version serving {rollbacks[-1]:.3f}s after the bad one stopped answering",
              flush=True)
    return {"rollback_s": round(statistics.median(rollbacks), 3), "rollback_max_s": round(max(rollbacks), 3),
            "rounds": len(rollbacks)}


@functools.cache
def _prober():
    """The plain side's health client, made once (a new httpx client builds a TLS context: 30-50 ms of CPU,
    which the plain side's timing would otherwise pay on every round and opsflow's probes do not)."""
    import httpx

    return httpx.Client(timeout=1)


def _wait_answer(url: str, deadline_s: float = 30) -> None:
    import httpx

    end = time.perf_counter() + deadline_s
    http = _prober()
    while time.perf_counter() < end:
        try:
            if http.get(url, headers={"Connection": "close"}).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{url} did not answer")


@contextlib.contextmanager
def only_the_flow_run():
    """For ``deploy_floor_ratio``: within the block, ``manual_deploy`` runs its task functions as plain calls
    (``Task.fn``; the deploy to the target in a thread of the run's context, as its task run would be) and
    publishes neither its plan nor its results table. Module attributes swapped in this process, then put back."""
    import concurrent.futures

    import flows.manual_deploy as flow_module
    import tasks.deploy.target as target_module
    from opsflow.core.threads import ContextThreadPool

    pool = ContextThreadPool(max_workers=4, thread_name_prefix="floor")

    class NoPlan:
        @staticmethod
        def submit(*args, **kwargs) -> concurrent.futures.Future:
            done: concurrent.futures.Future = concurrent.futures.Future()
            done.set_result(None)
            return done

    class PlainDeploy:
        @staticmethod
        def submit(*args, **kwargs) -> concurrent.futures.Future:
            return pool.submit(kept["deploy_to_target"].fn, *args, **kwargs)

    async def no_artifact(**kwargs) -> None:
        return None

    kept = {"publish_plan": flow_module.publish_plan, "deploy_to_target": flow_module.deploy_to_target,
            "rollout_docker": target_module.rollout_docker,
            "acreate_table_artifact": target_module.acreate_table_artifact}
    flow_module.publish_plan, flow_module.deploy_to_target = NoPlan, PlainDeploy
    target_module.rollout_docker, target_module.acreate_table_artifact = kept["rollout_docker"].fn, no_artifact
    try:
        yield
    finally:
        flow_module.publish_plan, flow_module.deploy_to_target = kept["publish_plan"], kept["deploy_to_target"]
        target_module.rollout_docker = kept["rollout_docker"]
        target_module.acreate_table_artifact = kept["acreate_table_artifact"]
        pool.shutdown()


def deploy_ratio_benchmark(app: str, port: int, host, rounds: int) -> dict:
    """``manual_deploy`` (rolling, host networking) vs ``docker rm -f`` + ``docker run`` + health polling."""
    from blocks import ContainerRegistry
    from tasks.registry.lookup import lookup_image

    registry = ContainerRegistry.load("local-registry")
    repository = registry.repository(f"{app}-web")
    images = {v: f"{repository}@{lookup_image.fn(registry, repository, v)}" for v in ("good", "good2")}
    health = f"http://127.0.0.1:{port}/healthz"
    client = host.get_client()
    cli_env = {**os.environ, "DOCKER_HOST": host.base_url}
    ours, floor, plain, sdk = [], [], [], []
    try:
        manual_deploy(app=app, version="good", targets=[host.name])  # warm: the images are on the engine
        for i in range(rounds):
            for version in ("good2", "good"):
                start = time.perf_counter()
                manual_deploy(app=app, version=version, targets=[host.name])
                ours.append(time.perf_counter() - start)
            with only_the_flow_run():
                for version in ("good2", "good"):
                    start = time.perf_counter()
                    manual_deploy(app=app, version=version, targets=[host.name])
                    floor.append(time.perf_counter() - start)
            for container in client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"}):
                container.remove(force=True)
            for version in ("good2", "good"):
                start = time.perf_counter()
                subprocess.run(["docker", "rm", "-f", f"bench-plain-{app}"], env=cli_env, capture_output=True,
                               check=False)
                subprocess.run(["docker", "run", "-d", "--name", f"bench-plain-{app}", "--network", "host",
                                images[version]], env=cli_env, capture_output=True, check=True)
                _wait_answer(health)
                plain.append(time.perf_counter() - start)
            for version in ("good2", "good"):
                start = time.perf_counter()
                for old in client.containers.list(all=True, filters={"name": f"^bench-plain-{app}$"}):
                    old.remove(force=True)
                client.containers.run(images[version], name=f"bench-plain-{app}", detach=True, network_mode="host")
                _wait_answer(health)
                sdk.append(time.perf_counter() - start)
            for old in client.containers.list(all=True, filters={"name": f"^bench-plain-{app}$"}):
                old.remove(force=True)
            manual_deploy(app=app, version="good", targets=[host.name])
            print(f"round {i + 1}: manual_deploy {statistics.median(ours[-2:]):.2f}s (only its flow run "
                  f"{statistics.median(floor[-2:]):.2f}s), docker run + health "
                  f"{statistics.median(plain[-2:]):.2f}s (SDK {statistics.median(sdk[-2:]):.2f}s)", flush=True)
        for container in client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"}):
            container.remove(force=True)
        surge = []
        try:  # the proxy takes the port
            manual_deploy(app=app, version="good", targets=["edge-local"])
        except Exception as exc:  # noqa: BLE001 - a first proxy start can miss the app's 3 s deadline at high load
            print(f"surge warm-up failed, once more: {exc}", flush=True)
            manual_deploy(app=app, version="good", targets=["edge-local"])
        for version in ("good2", "good") * rounds:
            start = time.perf_counter()
            manual_deploy(app=app, version=version, targets=["edge-local"])
            surge.append(time.perf_counter() - start)
    finally:
        client.close()
    return {"deploy_ratio": round(statistics.median(ours) / statistics.median(plain), 3),
            "deploy_s": round(statistics.median(ours), 3), "docker_run_health_s": round(statistics.median(plain), 3),
            "deploy_floor_ratio": round(statistics.median(floor) / statistics.median(plain), 3),
            "deploy_floor_s": round(statistics.median(floor), 3),
            "deploy_sdk_ratio": round(statistics.median(ours) / statistics.median(sdk), 3),
            "docker_sdk_run_health_s": round(statistics.median(sdk), 3),
            "deploy_surge_s": round(statistics.median(surge), 3)}


def edge_benchmarks(app: str, port: int, rounds: int, parts: set[str]) -> dict:
    from blocks import DockerHostTarget
    from tests.support.edge_nodes import Prober, edge_nodes

    result: dict = {}
    count = (4 if "edges" in parts else 0) + (1 if "compose" in parts else 0)
    with edge_nodes(count, Path(tempfile.mkdtemp(prefix="bench-edges-")), prefix=f"bench-{app[-6:]}") as all_nodes:
        if "compose" in parts:
            result.update(compose_benchmarks(app, port, all_nodes[-1], rounds))
        if "edges" not in parts:
            return result
        nodes = all_nodes[:4]
        names = [n.name for n in nodes]
        for node in nodes:
            DockerHostTarget(name=node.name, base_url=node.base_url, public_host=node.public_host,
                             network_mode="bridge").save(node.name, overwrite=True)
        manual_deploy(app=app, version="good", targets=names, method="rolling")  # warm-up: pulls on every node
        one, four, serial = [], [], []
        for i in range(rounds):
            for version, targets, parallel, times in (
                    ("good2", names[:1], 4, one), ("good2", names, 4, four), ("good", names, 1, serial),
                    ("good", names[:1], 4, one), ("good2", names, 1, serial), ("good", names, 4, four)):
                start = time.perf_counter()
                manual_deploy(app=app, version=version, targets=targets, method="rolling", max_parallel=parallel)
                times.append(time.perf_counter() - start)
            print(f"round {i + 1}: 1 node {one[-1]:.2f}s, 4 nodes {four[-1]:.2f}s, 4 nodes one at a time "
                  f"{serial[-1]:.2f}s", flush=True)
        result.update({
            "fanout_ratio": round(statistics.median(four) / statistics.median(one), 3),
            "fanout_1_node_s": round(statistics.median(one), 2), "fanout_4_nodes_s": round(statistics.median(four), 2),
            "fanout_4_nodes_one_at_a_time_s": round(statistics.median(serial), 2),
            "fanout_speedup_vs_one_at_a_time": round(statistics.median(serial) / statistics.median(four), 2)})

        url = f"http://{nodes[0].public_host}:{port}/index.html"
        failed, answers = [], 0
        for i in range(rounds * 2):
            with Prober(url) as prober:
                manual_deploy(app=app, version="good2" if i % 2 == 0 else "good", targets=names[:1],
                              method="blue-green")
                time.sleep(0.5)
            failed += prober.failed
            answers += len(prober.seen) + len(prober.failed)
            print(f"switch {i + 1}: {len(failed)} failed probes so far of {answers}", flush=True)
        result.update({"failed_probes_during_switch": len(failed), "switch_probes": answers,
                       "switches": rounds * 2, "failed_probe_kinds": sorted(set(map(str, failed)))})
    return result


COMPOSE = """version: "2.4"
services:
  web:
    image: {web}
{ports}  cache:
    image: {web}
    command: ["/bin/busybox", "httpd", "-f", "-p", "{cache_port}", "-h", "/www"]
  worker:
    image: {web}
    command: ["/bin/busybox", "sleep", "86400"]
"""


def _compose(argv: list[str], *args: str) -> None:
    done = subprocess.run([*argv, *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join([*argv, *args])} exited with {done.returncode}: {done.stderr[-1500:]}")


def compose_benchmarks(app: str, port: int, node, rounds: int) -> dict:
    """A 3-service compose project: ``manual_deploy`` of one service vs the same by hand; blue-green probes."""
    import docker

    from blocks import ContainerRegistry, DockerHostTarget
    from tasks.registry.lookup import lookup_image
    from tests.support.edge_nodes import Prober
    from tests.support.net import free_port

    registry = ContainerRegistry.load("local-registry")
    repository = registry.repository(f"{app}-web")
    images = {v: f"{repository}@{lookup_image.fn(registry, repository, v)}" for v in ("good", "good2")}
    client = docker.DockerClient(base_url=node.base_url, timeout=120)
    for image in images.values():
        client.images.pull(image.split("@")[0], tag=image.split("@")[1], auth_config=registry.auth_config())
    root = Path(tempfile.mkdtemp(prefix="bench-compose-"))
    health = f"http://{node.public_host}:{port}/healthz"

    def project(name: str, published: bool):
        path = root / name / "docker-compose.yml"
        path.parent.mkdir()
        ports = f'    ports: ["{port}:{port}"]\n' if published else ""
        path.write_text(COMPOSE.format(web=images["good"], ports=ports, cache_port=free_port()))
        block = DockerHostTarget(name=f"{node.name}-{name}", base_url=node.base_url, public_host=node.public_host,
                                 network_mode="bridge", compose_project=name, compose_file=str(path),
                                 compose_root=str(root / "opsflow"), compose_command=["docker-compose"])
        block.save(block.name, overwrite=True)
        argv = ["docker-compose", "-H", node.base_url, "-p", name, "-f", str(path)]
        _compose(argv, "up", "-d")
        return block, path, argv

    block, path, argv = project("rolling", published=True)
    ours, by_hand = [], []
    manual_deploy(app=app, version="good", targets=[block.name])  # opsflow's labels on the service
    for i in range(rounds):
        for version in ("good2", "good"):
            start = time.perf_counter()
            manual_deploy(app=app, version=version, targets=[block.name])
            ours.append(time.perf_counter() - start)
        for version in ("good2", "good"):
            start = time.perf_counter()
            text = path.read_text()
            other = images["good"] if version == "good2" else images["good2"]
            path.write_text(text.replace(f"image: {other}", f"image: {images[version]}", 1))
            _compose(argv, "up", "-d", "--no-deps", "web")
            _wait_answer(health)
            by_hand.append(time.perf_counter() - start)
        print(f"compose round {i + 1}: manual_deploy {statistics.median(ours[-2:]):.2f}s, by hand "
              f"{statistics.median(by_hand[-2:]):.2f}s", flush=True)
    _compose(argv, "down")

    block, path, argv = project("bluegreen", published=False)
    manual_deploy(app=app, version="good", targets=[block.name], method="blue-green")  # the proxy takes the port
    failed, answers = [], 0
    for i in range(rounds * 2):
        with Prober(f"http://{node.public_host}:{port}/index.html") as prober:
            manual_deploy(app=app, version="good2" if i % 2 == 0 else "good", targets=[block.name],
                          method="blue-green")
            time.sleep(0.5)
        failed += prober.failed
        answers += len(prober.seen) + len(prober.failed)
        print(f"compose switch {i + 1}: {len(failed)} failed probes so far of {answers}", flush=True)
    for container in client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"}):
        container.remove(force=True)  # opsflow's proxy sits on the project's network
    _compose(argv, "down")
    client.close()
    shutil.rmtree(root, ignore_errors=True)  # the projects' files and opsflow's secret files of them
    return {"compose_update_s": round(statistics.median(ours), 3),
            "compose_by_hand_s": round(statistics.median(by_hand), 3),
            "compose_ratio": round(statistics.median(ours) / statistics.median(by_hand), 3),
            "compose_failed_probes_during_switch": len(failed), "compose_switch_probes": answers}


if __name__ == "__main__":
    main()
