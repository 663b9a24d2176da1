"""A burst of mixed deliveries on loopback, 200 connections at once: valid ones start exactly one run each,
nothing else starts any, nothing is answered 5xx."""

from __future__ import annotations

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from opsflow.core.tls import default_context
from tests.support.deliveries import pr_payload, signed
from tests.support.webhook_receiver import REPO, SECRET

pytestmark = pytest.mark.stack
TOTAL = 500
CONCURRENT = 200  # connections (and requests) in flight at once
RECEIVER_ARGS = ["--header-timeout", "10", "--body-timeout", "10"]  # the defaults: 200 client threads are slow


def _rss_kib(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1])


def test_mixed_burst(receiver):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    def valid_delivery(i: int):
        return signed("github", "pull_request", pr_payload("github", "opened", 1000 + i, uuid.uuid4().hex + "0" * 8,
                                                            REPO), SECRET)

    with httpx.Client(timeout=30) as warm:  # warm-up, then measure the receiver's memory
        for i in range(30):
            warm.post(receiver.url, content=valid_delivery(i)[1], headers=valid_delivery(i)[0])
    before = _rss_kib(receiver.proc.pid)
    valid = [valid_delivery(100 + i) for i in range(TOTAL * 2 // 5)]
    items = [("valid", h, b) for h, b in valid] + [("dup", h, b) for h, b in random.sample(valid, TOTAL // 5)]
    for i in range(TOTAL // 5):
        headers, body = valid_delivery(5000 + i)
        items.append(("badsig", {**headers, "X-Hub-Signature-256": "sha256=" + "1" * 64}, body))
    while len(items) < TOTAL:
        items.append(("malformed", *signed("github", "pull_request", b'{"action": "opened", "num', SECRET)))
    random.shuffle(items)
    # One connection per delivery, as a forge sends them: a kept-alive connection left idle past the
    # receiver's keep-alive (5 s, on a busy machine) may be closed just as a request is sent on it, which no
    # HTTP client can tell from a crash. A client of its own per delivery: one client's pool shared by the
    # threads without keep-alive was seen to close a connection another thread was reading (EBADF) at load 9.

    def send(item):
        kind, headers, body = item
        started = time.perf_counter()
        # One TLS context for all: httpx builds one per client otherwise (the CA bundle loaded again, ~30 ms of
        # CPU each), which was a fifth of this test process's CPU, the receiver's answers waiting on it.
        code = httpx.post(receiver.url, content=body, headers=headers, timeout=30, verify=default_context()).status_code
        return kind, headers, code, time.perf_counter() - started

    with ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(send, items))
    after = _rss_kib(receiver.proc.pid)
    seconds = sorted(s for kind, _, _, s in answers if kind == "valid")
    answers = [(kind, headers, code) for kind, headers, code, _ in answers]
    codes = {(kind, code) for kind, _, code in answers}
    assert not [c for c in codes if c[1] >= 500], codes
    assert codes == {("valid", 202), ("dup", 202), ("badsig", 401), ("malformed", 400)}
    shas = {__import__("json").loads(b)["pull_request"]["head"]["sha"] for _, b in valid}
    bad_shas = {__import__("json").loads(b)["pull_request"]["head"]["sha"] for kind, _, b in items
                if kind == "badsig"}
    def webhook_runs() -> list:
        with get_client(sync_client=True) as client:
            runs, offset = [], 0
            while True:
                page = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["webhook"])), limit=200, offset=offset)
                runs += page
                offset += 200
                if len(page) < 200:
                    return runs

    # A delivery answered "queued" has its run created in the background: wait for them (bounded).
    deadline = time.monotonic() + 120
    while True:
        runs = webhook_runs()
        if len({r.parameters.get("sha") for r in runs} & shas) == len(shas) or time.monotonic() > deadline:
            break
        time.sleep(1)
    started = [r.parameters["sha"] for r in runs if r.parameters.get("sha") in shas]
    assert sorted(started) == sorted(shas)  # each valid delivery: exactly one run, duplicates none
    assert not [r for r in runs if r.parameters.get("sha") in bad_shas]
    print(f"{TOTAL} deliveries, {CONCURRENT} at a time: {len(shas)} valid → {len(started)} runs; answers p50 "
          f"{seconds[len(seconds) // 2]:.3f}s p99 {seconds[int(len(seconds) * 0.99)]:.3f}s; RSS {before} → {after} KiB")
    assert after - before < 30 * 1024
