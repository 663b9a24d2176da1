"""Webhook receiver benchmark: answer times of concurrent valid deliveries, with and without slow clients.

    uv run python bench/webhook.py [--concurrent 200] [--rounds 3] [--slow 250]

Uses the stack of ``opsflow stack up`` (started if needed), found in a fresh shell by itself (its API URL
and auth string from its home). Starts the receiver (``opsflow webhook serve``) on a pool no worker serves,
so runs are created and stay scheduled; then, per round, ``--concurrent`` signed pull request deliveries
at once (one connection each, asyncio client), and reports the answer times:

* ``p50_s``/``p99_s``/``max_s``: the best round's answer times (all 202, no 5xx);
* ``slow_p99_s``: the same burst while ``--slow`` clients hold connections sending their headers slowly
  (the receiver's header deadline is 2 s here: they are cut off, the burst is answered meanwhile);
* ``slow_cut_off``: slow clients the receiver closed (must equal ``--slow``).

Prints one line per measurement and a final line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def burst(url: str, deliveries: list[tuple[dict, bytes]]) -> list[tuple[int, float]]:
    import httpx

    limits = httpx.Limits(max_connections=len(deliveries), max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        async def one(headers: dict, body: bytes) -> tuple[int, float]:
            started = time.perf_counter()
            resp = await http.post(url, content=body, headers=headers)
            return resp.status_code, time.perf_counter() - started

        return await asyncio.gather(*(one(h, b) for h, b in deliveries))


async def slow_clients(port: int, count: int) -> tuple[list, int]:
    """Open ``count`` connections that send half a request head; returns them and a waiter."""
    writers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /hooks/github HTTP/1.1\r\nHost: hooks\r\n")
        await writer.drain()
        writers.append((reader, writer))
    return writers, count


async def measure(url: str, port: int, make, concurrent: int, slow: int) -> tuple[list[tuple[int, float]], int]:
    held = []
    if slow:
        held, _ = await slow_clients(port, slow)
    answers = await burst(url, [make() for _ in range(concurrent)])
    cut = 0
    for reader, writer in held:  # every slow client is cut off by the receiver (its header deadline)
        try:
            await asyncio.wait_for(reader.read(), 30)
            cut += 1
        except TimeoutError:
            pass
        writer.close()
    return answers, cut


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slow", type=int, default=250)
    parser.add_argument("--answer-within-ms", type=int, default=80, help="the receiver's own option")
    args = parser.parse_args()

    from opsflow.core.prefect_api import use_local_stack

    use_local_stack()  # the stack's API URL and auth string, before Prefect is imported

    from opsflow.stack import Stack, StackConfig
    from tests.support.deliveries import pr_payload, signed
    from tests.support.net import free_port
    from tests.support.webhook_receiver import REPO, SECRET, ReceiverProcess, prepare_hook_targets

    cfg = StackConfig.running()
    Stack(cfg, say=lambda line: print(f"[stack] {line}", file=sys.stderr)).up()
    prepare_hook_targets()

    def make() -> tuple[dict, bytes]:
        return signed("github", "pull_request",
                      pr_payload("github", "opened", 7000, uuid.uuid4().hex + "0" * 8, REPO), SECRET)

    with tempfile.TemporaryDirectory(prefix="opsflow-bench-webhook-") as tmp:
        port = free_port()
        receiver = ReceiverProcess(port, Path(tmp) / "journal.sqlite3", cfg.prefect_api_url,
                                   extra_env=cfg.client_env())
        receiver.args += ["--answer-within-ms", str(args.answer_within_ms)]
        receiver.start()
        try:
            asyncio.run(burst(receiver.url, [make() for _ in range(20)]))  # warm-up
            rounds, slow_rounds, cut_off = [], [], []
            for i in range(args.rounds):
                answers, _ = asyncio.run(measure(receiver.url, port, make, args.concurrent, 0))
                assert all(code == 202 for code, _ in answers), sorted({c for c, _ in answers})
                rounds.append(sorted(s for _, s in answers))
                answers, cut = asyncio.run(measure(receiver.url, port, make, args.concurrent, args.slow))
                assert all(code == 202 for code, _ in answers), sorted({c for c, _ in answers})
                slow_rounds.append(sorted(s for _, s in answers))
                cut_off.append(cut)
                print(f"round {i + 1}: {args.concurrent} at once p99 {rounds[-1][int(0.99 * len(rounds[-1]))]:.3f}s; "
                      f"with {args.slow} slow clients p99 {slow_rounds[-1][int(0.99 * len(slow_rounds[-1]))]:.3f}s, "
                      f"{cut} cut off", flush=True)
        finally:
            try:
                receiver.stop()
            except subprocess.TimeoutExpired:  # still creating the runs of the bursts: not what is measured
                receiver.proc.kill()
    best = min(rounds, key=lambda r: r[int(0.99 * len(r))])
    best_slow = min(slow_rounds, key=lambda r: r[int(0.99 * len(r))])
    result = {
        "concurrent": args.concurrent, "rounds": args.rounds, "p50_s": round(statistics.median(best), 3),
        "p99_s": round(best[int(0.99 * len(best))], 3), "max_s": round(best[-1], 3),
        "slow_clients": args.slow, "slow_p99_s": round(best_slow[int(0.99 * len(best_slow))], 3),
        "slow_cut_off": min(cut_off), "load_avg": os.getloadavg()[0], "targets": {"p99_s": 1.0},
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
