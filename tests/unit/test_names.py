"""deployments/prefect.yaml (YAML cannot import) agrees with blocks/names.py and the flows' own names."""

from __future__ import annotations

import importlib

import yaml

from blocks import names
from opsflow.core.paths import PROJECT_ROOT
from opsflow.webhook.routing import PIPELINES

PREFECT_YAML = yaml.safe_load((PROJECT_ROOT / "deployments" / "prefect.yaml").read_text())


def _flow(entrypoint: str):
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def test_prefect_yaml_uses_the_named_pools_deployments_and_blocks():
    block_names = {names.ARTIFACT_STORE, names.DATA_STORE, names.REGISTRY, names.MLFLOW, names.BUILD_ENGINE,
                   names.EDGE_NODE, names.CLEANUP_POLICY}
    declared = set()
    for deployment in PREFECT_YAML["deployments"]:
        flow = _flow(deployment["entrypoint"])
        declared.add(f"{flow.name}/{deployment['name']}")
        assert deployment["work_pool"]["name"] in (names.BUILD_POOL, names.EDGE_POOL)
        assert deployment["name"] in (names.DEFAULT_DEPLOYMENT, names.NIGHTLY_DEPLOYMENT, names.EDGE_NODE)
        for key, value in (deployment.get("parameters") or {}).items():
            assert key in flow.parameters.properties, f"{flow.name} has no parameter {key}"
            if key.endswith(("_block", "_store")):
                assert value in block_names, f"{deployment['name']}: {key}={value} is not a default block name"
    # every deployment the webhook starts is declared
    for pr_flow, merge_flow in PIPELINES.values():
        assert {f"{pr_flow}/{names.DEFAULT_DEPLOYMENT}", f"{merge_flow}/{names.DEFAULT_DEPLOYMENT}"} <= declared
