"""Manual deploy benchmark on the stack's Docker engine (standing in for an edge node).

    uv run python bench/deploy.py [--rounds 5]

Uses the stack of ``opsflow stack up`` (started if needed; ports from the OPSFLOW_* variables).
Builds two good versions and a bad one of a tiny web image (the bad one has no /healthz;
``STOPSIGNAL SIGKILL``, since busybox httpd as PID 1 ignores SIGTERM and every stop would
otherwise wait Docker's 10 s stop timeout), deploys
the good one, then the bad one ``--rounds`` times while a prober reads the page every 20 ms.

* ``rollback_s``: from the last answer of the bad version (its health gate has given up and
  it is being removed) to the first answer of the old version again; median of the rounds.

Then it starts four edge nodes (extra Docker engines with bridge networking, tests/support/edge_nodes.py;
needs root) and measures:

* ``fanout_ratio``: a rolling deploy to all 4 nodes in one run vs the same deploy to 1 node
  (medians of ``--rounds`` alternating good/good2 deploys, after a warm-up deploy to all 4);
  ``fanout_speedup_vs_one_at_a_time``: the 4-node deploy with ``max_parallel=1`` vs 4. All four
  engines share this machine's cores, which a real fleet does not.
* ``failed_probes_during_switch``: a prober reads the public port of node 1 every 50 ms during
  ``--rounds`` blue-green switches good ↔ good2; failed reads (errors, non-200, timeouts) in total.

Prints one line per round and a final line ``RESULT {json}``.

Measured here (2 cores, ``--rounds 5``): ``rollback_s`` 0.17-0.20, ``failed_probes_during_switch`` 0
of 544-565 probes, ``fanout_ratio`` 1.72 with the stack's Prefect server on PostgreSQL
(``OPSFLOW_DATABASE_URL``) and 1.9-2.4 on SQLite. Before the deploy lock stopped going through
Prefect's client (tasks/deploy/lock.py) it was 2.25: each SQLite 503 on taking the lock cost a 2 s,
then 4 s sleep. What is left is the four engines and their rollouts sharing two cores (a rollout
takes 0.6 s alone, 1.0-2.3 s four at a time), and on SQLite the lock requests' lost write races.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    # The stack's server, before Prefect is imported (else a run would start a temporary server).
    from opsflow.core.prefect_api import use_local_stack

    use_local_stack()

    import httpx

    from blocks import DockerHostTarget
    from flows.manual_deploy import manual_deploy
    from opsflow.stack import Stack, StackConfig
    from tests.support.net import free_port
    from tests.support.web_app import push_web_app

    cfg = StackConfig.from_env()
    Stack(cfg, say=lambda line: print(f"[stack] {line}", file=sys.stderr)).up()
    uid = uuid.uuid4().hex[:6]
    app, port = f"bench-dep-{uid}", free_port()
    engine = DockerHostTarget.load("edge-local")
    push_web_app(app, port, {"good": True, "good2": True, "bad": False}, deadline_s=3, source="bench")
    manual_deploy(app=app, version="good", targets=["edge-local"])

    seen: list[tuple[float, str]] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=0.5) as http:
            while not stop.is_set():
                try:
                    body = http.get(f"http://127.0.0.1:{port}/index.html").text.strip()
                except httpx.HTTPError:
                    body = "-"
                seen.append((time.perf_counter(), body))
                time.sleep(0.02)

    rollbacks = []
    try:
        for i in range(args.rounds):
            seen.clear()
            stop.clear()
            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            try:
                manual_deploy(app=app, version="bad", targets=["edge-local"])
                raise AssertionError("the bad version was deployed")
            except Exception as exc:  # noqa: BLE001 - the failed deploy is the point
                assert "rolled back" in str(exc), exc
            time.sleep(0.5)
            stop.set()
            prober.join()
            last_bad = max(t for t, body in seen if body == "bad")
            back = min(t for t, body in seen if body == "good" and t > last_bad)
            rollbacks.append(back - last_bad)
            print(f"round {i + 1}: old version serving {rollbacks[-1]:.3f}s after the bad one stopped answering",
                  flush=True)
    finally:
        client = engine.get_client()
        for container in client.containers.list(all=True, filters={"label": f"org.opsflow.app={app}"}):
            container.remove(force=True)
        client.close()
    result = {"rollback_s": round(statistics.median(rollbacks), 3), "rollback_max_s": round(max(rollbacks), 3),
              "rounds": len(rollbacks)}
    result.update(edge_benchmarks(app, port, args.rounds))
    print("RESULT " + json.dumps(result), flush=True)


def edge_benchmarks(app: str, port: int, rounds: int) -> dict:
    import tempfile

    import httpx

    from blocks import DockerHostTarget
    from flows.manual_deploy import manual_deploy
    from tests.support.edge_nodes import edge_nodes

    with edge_nodes(4, Path(tempfile.mkdtemp(prefix="bench-edges-")), prefix=f"bench-{app[-6:]}") as nodes:
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

        url = f"http://{nodes[0].public_host}:{port}/index.html"
        manual_deploy(app=app, version="good", targets=names[:1], method="blue-green")  # proxy takes the port
        failed: list[str] = []
        answers = 0
        for i in range(rounds * 2):
            stop = threading.Event()

            def probe(stop: threading.Event = stop) -> None:
                nonlocal answers
                while not stop.is_set():
                    try:
                        resp = httpx.get(url, timeout=2)
                        answers += 1
                        if resp.status_code != 200:
                            failed.append(f"HTTP {resp.status_code}")
                    except httpx.HTTPError as exc:
                        failed.append(type(exc).__name__)
                    time.sleep(0.05)

            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            manual_deploy(app=app, version="good2" if i % 2 == 0 else "good", targets=names[:1], method="blue-green")
            time.sleep(0.5)
            stop.set()
            prober.join()
            print(f"switch {i + 1}: {len(failed)} failed probes so far of {answers}", flush=True)
    return {"fanout_ratio": round(statistics.median(four) / statistics.median(one), 3),
            "fanout_1_node_s": round(statistics.median(one), 2), "fanout_4_nodes_s": round(statistics.median(four), 2),
            "fanout_4_nodes_one_at_a_time_s": round(statistics.median(serial), 2),
            "fanout_speedup_vs_one_at_a_time": round(statistics.median(serial) / statistics.median(four), 2),
            "failed_probes_during_switch": len(failed), "switch_probes": answers, "switches": rounds * 2,
            "failed_probe_kinds": sorted(set(failed))}


if __name__ == "__main__":
    main()
