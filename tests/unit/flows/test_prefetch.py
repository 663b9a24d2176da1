"""The blocks a flow declares it reads first (``reads_blocks_first``) are the ones its ``load_config`` then asks
for, so the load takes the early read instead of asking again; the read starts when a worker's run process has
imported the flow, and when the flow is called in a process (``flows.options.Flow``), before Prefect's engine."""

from __future__ import annotations

import logging

import pytest

from blocks import loading
from flows import common
from flows.gitops_merge import gitops_merge
from flows.gitops_pr import gitops_pr
from flows.mlops_merge import mlops_merge
from flows.mlops_pr import mlops_pr
from flows.options import Flow, flow

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
    loading.start_declared_reads(flow.fn, kwargs=parameters)
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
    loading.start_declared_reads(manual_deploy.fn, kwargs={"app": "shop", "version": "1.2", "targets": ["k1", "k2"],
                                                           "target_kind": "kubernetes"})
    assert early == [((Application, "shop"), (ContainerRegistry, "local-registry"), (ObjectStore, "opsflow-artifacts"),
                      (KubernetesTarget, "k1"), (KubernetesTarget, "k2"))]
    loading.start_declared_reads(manual_deploy.fn, kwargs={"app": "shop", "version": "1.2", "target_kind": "nope"})
    assert len(early) == 1  # a kind the flow refuses: nothing read early, the flow says what is wrong


def test_a_failing_declaration_or_a_flow_without_one_starts_nothing(caplog):
    def plain(app: str):
        return app

    loading.start_declared_reads(plain, kwargs={"app": "x"})  # nothing declared: nothing happens

    def broken(app: str):
        return app

    setattr(broken, loading.PREFETCH_ATTRIBUTE, lambda arguments: 1 / 0)
    with caplog.at_level(logging.DEBUG, logger="test"):
        loading.start_declared_reads(broken, kwargs={"app": "x"}, logger=logging.getLogger("test"))
    assert "ZeroDivisionError" in caplog.text
    loading.start_declared_reads(broken, kwargs={"nope": 1})  # parameters the flow does not take


def test_calling_a_flow_starts_its_declared_reads_before_the_engine(monkeypatch):
    """A flow called in a process (positional and keyword arguments, its defaults filled in) starts the read
    before Prefect's engine runs; the call's own options are Prefect's."""
    import prefect.flow_engine

    from blocks import Application, ObjectStore

    order = []
    monkeypatch.setattr(loading, "prefetch_blocks", lambda *wanted: order.append(("read", wanted)))
    monkeypatch.setattr(prefect.flow_engine, "run_flow", lambda **kw: order.append(("engine", kw["parameters"],
                                                                                    kw["return_type"])) or "ran")

    @flow(name="declares-reads")
    @loading.reads_blocks_first(lambda a: [(Application, a["app"]), (ObjectStore, a["store"])])
    def declares(app: str, pr: int, store: str = "artifacts"):
        return app

    assert isinstance(declares, Flow)
    assert declares("shop", pr=3, return_state=True) == "ran"
    assert order == [("read", ((Application, "shop"), (ObjectStore, "artifacts"))),
                     ("engine", {"app": "shop", "pr": 3, "store": "artifacts"}, "state")]


def test_every_flow_that_declares_reads_starts_them_when_called():
    """A flow whose function declares its first reads is made by ``flows.options.flow``: called in a process, a
    ``prefect.flow`` would not start them."""
    import importlib
    import pathlib

    from prefect import Flow as PrefectFlow

    files = sorted(pathlib.Path(common.__file__).parent.glob("*.py"))
    modules = [importlib.import_module(f"flows.{path.stem}") for path in files]
    flows = [value for module in modules for value in vars(module).values() if isinstance(value, PrefectFlow)]
    declared = [f for f in flows if hasattr(f.fn, loading.PREFETCH_ATTRIBUTE)]
    assert len(declared) >= 5
    assert [f.name for f in declared if not isinstance(f, Flow)] == []


def test_an_early_read_too_old_is_not_taken(monkeypatch):
    """A read left behind (its flow failed before loading) is not taken by a later load: that load reads again."""
    from concurrent.futures import Future

    from blocks import Application

    now = [1000.0]
    monkeypatch.setattr(loading.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(loading, "start_thread", lambda fn, name: fn())
    monkeypatch.setattr(loading, "_read", lambda named: [{"left": "behind"}])
    loading.prefetch_blocks((Application, "shop"))
    now[0] += loading.PREFETCH_FRESH_S + 1
    assert loading._take([(Application, "shop")]) is None
    loading.prefetch_blocks((Application, "shop"))
    now[0] += 1
    taken = loading._take([(Application, "shop")])
    assert isinstance(taken, Future) and taken.result() == [{"left": "behind"}]
    assert loading._take([(Application, "shop")]) is None  # once
