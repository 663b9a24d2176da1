"""The Prefect client as the worker's claim path sees it: two reads answered from memory.

Between hearing of a run and forking it, ``BaseWorker`` reads the run's deployment twice (once to
check it still exists, once to build the job configuration) and its flow once per run. On the
way to a run's start each read is a round trip to the server (10-60 ms here, more under load).
:class:`RecentReads` answers a deployment read again within ``DEPLOYMENT_TTL_S`` (the two reads of
one claim; a deployment applied since is read afresh after that; the read may already have been
started by the event that scheduled the run, :meth:`RecentReads.prefetch_deployment`), and a flow
from memory (a flow's id and name, all the job configuration uses, never change). Everything else
goes to the client.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

DEPLOYMENT_TTL_S = 1.0
_MAX_FLOWS = 1000


class RecentReads:
    """Wraps a ``PrefectClient``; see the module docstring."""

    def __init__(self, client: Any, clock=time.monotonic):
        self._client = client
        self._clock = clock
        self._deployments: dict[UUID, tuple[float, asyncio.Future]] = {}
        self._flows: dict[UUID, Any] = {}

    @property
    def wrapped(self) -> Any:
        return self._client

    def _deployment_read(self, deployment_id: UUID) -> asyncio.Future:
        now = self._clock()
        hit = self._deployments.get(deployment_id)
        if hit is None or now - hit[0] >= DEPLOYMENT_TTL_S:
            self._deployments = {k: v for k, v in self._deployments.items() if now - v[0] < DEPLOYMENT_TTL_S}
            hit = self._deployments[deployment_id] = (now, asyncio.ensure_future(
                self._client.read_deployment(deployment_id)))
        return hit[1]

    def prefetch_deployment(self, deployment_id: UUID) -> None:
        """Start reading a deployment a run was just scheduled for, before the claim asks for it."""
        self._deployment_read(deployment_id).add_done_callback(_ignore_failure)

    async def read_deployment(self, deployment_id: UUID) -> Any:
        read = self._deployment_read(deployment_id)
        try:
            deployment = await asyncio.shield(read)
        except Exception:
            if self._deployments.get(deployment_id, (0, None))[1] is read:
                del self._deployments[deployment_id]  # a failed read is not remembered
            raise
        return deployment.model_copy(deep=True)  # a copy: Prefect merges a run's job variables into what it gets

    async def read_flow(self, flow_id: UUID) -> Any:
        if flow_id not in self._flows:
            if len(self._flows) >= _MAX_FLOWS:
                self._flows.clear()
            self._flows[flow_id] = await self._client.read_flow(flow_id)
        return self._flows[flow_id]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _ignore_failure(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # read, so asyncio does not log it; the claim's own read raises it
