"""The blocks a flow declares it reads first (``reads_blocks_first``) are the ones its ``load_config`` then asks
for, so the load in a worker's run process takes the early read instead of asking again."""

from __future__ import annotations

import logging

import pytest

from blocks import loading
from flows import common
from flows.gitops_merge import gitops_merge
from flows.gitops_pr import gitops_pr
from flows.mlops_merge import mlops_merge
from flows.mlops_pr import mlops_pr
from opsflow.worker.runner import start_prefetch

SHA = "a" * 40


class _Loaded(Exception):
    """Stops load_config once it asked for its blocks."""


@pytest.mark.parametrize(("flow", "parameters"), [
    (gitops_pr, {"app": "shop", "pr": 3, "sha": SHA, "forge_block": "github"}),
    (gitops_pr, {"app": "shop", "pr": 3, "sha": SHA}),  # no forge: started by hand
    (gitops_merge, {"app": "shop", "sha": SHA, "registry_block": "harbor"}),
    (mlops_pr, {"app": "iris", "pr": 1, "sha": SHA, "forge_block": "github"}),
    (mlops_merge, {"app": "iris", "sha": SHA}),
])
def test_a_flow_reads_first_what_its_load_config_asks_for(monkeypatch, flow, parameters):
    early, asked = [], []
    monkeypatch.setattr(loading, "prefetch_blocks", lambda *wanted: early.append(wanted))

    def load_blocks(*wanted):
        asked.append(wanted)
        raise _Loaded

    monkeypatch.setattr(common, "load_blocks", load_blocks)
    start_prefetch(flow.fn, parameters, logging.getLogger("test"))
    with pytest.raises(_Loaded):
        flow.fn(**parameters)  # the flow's own first step, with its own defaults, up to its blocks' read
    [early_wanted], [load_wanted] = early, asked
    named = [(cls, name) for cls, name in early_wanted if name]
    assert named and loading._key(named) == loading._key([(cls, name) for cls, name in load_wanted if name])


def test_a_manual_deploy_reads_first_its_application_registry_records_store_and_targets(monkeypatch):
    from blocks import Application, ContainerRegistry, KubernetesTarget, ObjectStore
    from flows.manual_deploy import manual_deploy

    early = []
    monkeypatch.setattr(loading, "prefetch_blocks", lambda *wanted: early.append(wanted))
    start_prefetch(manual_deploy.fn, {"app": "shop", "version": "1.2", "targets": ["k1", "k2"],
                                      "target_kind": "kubernetes"}, logging.getLogger("test"))
    assert early == [((Application, "shop"), (ContainerRegistry, "local-registry"), (ObjectStore, "opsflow-artifacts"),
                      (KubernetesTarget, "k1"), (KubernetesTarget, "k2"))]
    start_prefetch(manual_deploy.fn, {"app": "shop", "version": "1.2", "target_kind": "nope"}, logging.getLogger("t"))
    assert len(early) == 1  # a kind the flow refuses: nothing read early, the flow says what is wrong


def test_a_failing_declaration_or_a_flow_without_one_starts_nothing(caplog):
    def plain(app: str):
        return app

    start_prefetch(plain, {"app": "x"}, logging.getLogger("test"))  # nothing declared: nothing happens

    def broken(app: str):
        return app

    setattr(broken, loading.PREFETCH_ATTRIBUTE, lambda arguments: 1 / 0)
    with caplog.at_level(logging.DEBUG, logger="test"):
        start_prefetch(broken, {"app": "x"}, logging.getLogger("test"))
    assert "ZeroDivisionError" in caplog.text
    start_prefetch(broken, {"nope": 1}, logging.getLogger("test"))  # parameters the flow does not take
