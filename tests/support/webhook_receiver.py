"""The webhook receiver (``python -m opsflow.webhook serve``) as a process of a test, and the names it routes with."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.paths import ROOT

SECRET = "hooks-test-secret-9d1e"
POOL = "webhook-test"
DEPLOYMENT = "webhook-test"
REPO = "acme/hooks"


@dataclass
class ReceiverProcess:
    port: int
    journal: Path
    api_url: str
    proc: subprocess.Popen | None = None
    log: Path | None = None
    extra_env: dict = field(default_factory=dict)
    # Short deadlines: a test's slow clients are cut off in seconds; valid deliveries take milliseconds.
    args: list[str] = field(default_factory=lambda: ["--header-timeout", "2", "--body-timeout", "2"])
    ca_pem: str | None = None  # served with --tls-cert/--tls-key: the CA its certificate is verified with

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_pem else 'http'}://127.0.0.1:{self.port}/hooks/github"

    @property
    def verify(self):
        from opsflow.core.tls import context_with_ca, default_context

        return context_with_ca(self.ca_pem) if self.ca_pem else default_context()  # built once, not per request

    def start(self, api_url: str | None = None) -> ReceiverProcess:
        self.log = self.journal.with_suffix(".log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opsflow.webhook", "serve", "--forge-block", "hooks-forge", "--port",
             str(self.port), "--journal", str(self.journal), "--deployment", DEPLOYMENT, "--max-body", "65536",
             *self.args],
            cwd=ROOT, env={**os.environ, "PREFECT_API_URL": self.api_url, **self.extra_env},
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url.replace("/hooks/github", "/healthz"), timeout=1,
                             verify=self.verify).status_code == 200:
                    return self
            except httpx.HTTPError:
                assert self.proc.poll() is None, f"the receiver exited: {self.log.read_text()[-2000:]}"
                time.sleep(0.1)
        raise AssertionError("the receiver did not come up")

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(30)


def prepare_hook_targets() -> None:
    """The blocks and (worker-less) deployments a test receiver routes to: the ``hooks-forge`` GitForge block
    (webhook secret ``SECRET``), the ``hooks-app`` application on ``REPO``, and ``gitops-pr``/``gitops-merge``
    deployed as ``DEPLOYMENT`` on pool ``POOL``, which no worker serves (runs stay scheduled)."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, PrefectHTTPStatusError

    from opsflow.samples import save_shop_blocks
    from opsflow.stack.forge_emulator import ForgeEmulator

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except ObjectAlreadyExists:
            pass
    for entry in ("flows/gitops_pr.py:gitops_pr", "flows/gitops_merge.py:gitops_merge"):
        # A SQLite-backed server still writing a load test's burst answers 503 ("database is locked") for a
        # while on a busy machine; wait for it rather than fail.
        deadline = time.monotonic() + 240
        while True:
            try:
                flow.from_source(source=str(ROOT), entrypoint=entry).deploy(
                    name=DEPLOYMENT, work_pool_name=POOL, build=False, push=False, print_next_steps=False,
                    ignore_warnings=True)
                break
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 503 or time.monotonic() > deadline:
                    raise
                time.sleep(5)
    block = ForgeEmulator().block("github")  # only its block: deliveries are signed with the block's secret
    block.webhook_secret = SECRET
    block.save("hooks-forge", overwrite=True)
    save_shop_blocks("file:///nowhere/hooks.git", name="hooks-app", forge_repo=REPO)
