"""An ML repository as such repositories are written (samples/ml-dvclive: its own requirements.txt with dvclive,
which opsflow's environment lacks; a two-stage DVC pipeline; dvclive's nested metrics and plots declared in dvc.yaml;
nothing of opsflow's but opsflow-ml.yaml) through the MLOps PR and merge flows on the real stack: moto S3 (DVC
remote), the MLflow server, Prefect, the forge emulation, uv building the repository's environment."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest

from flows.mlops_merge import mlops_merge
from flows.mlops_pr import mlops_pr
from opsflow.samples import ML_DVCLIVE_SOURCE, ml_sample_repo, save_ml_blocks
from tests.support.gitops_harness import run_flow, run_logs

pytestmark = [pytest.mark.stack, pytest.mark.forge]

FORGE_REPO = "acme/ml-dvclive"
BRANCH = "feature/more-trees"


@pytest.fixture(scope="module")
def dvclive(stack, forge_emulator, tmp_path_factory):
    """PR #31 (more trees, on its branch) of a fresh ml-dvclive repository, then its merge."""
    from blocks import ObjectStore

    app = f"mld-{uuid.uuid4().hex[:6]}"
    repo = ml_sample_repo(tmp_path_factory.mktemp("mld"), ObjectStore.load("opsflow-data"), f"dvc/{app}",
                          source=ML_DVCLIVE_SOURCE, model_name=app)
    forge_emulator.block("github").save("mlops-dvclive-forge", overwrite=True)
    save_ml_blocks(repo.url, name=app, forge_repo=FORGE_REPO)
    common = {"app": app, "forge_block": "mlops-dvclive-forge"}
    repo.write("params.yaml", repo.read("params.yaml").replace("n_est: 30", "n_est: 40"))
    head = repo.commit("More trees", branch=BRANCH)
    pr = run_flow(mlops_pr, pr=31, sha=head, branch=BRANCH, **common)
    merge = run_flow(mlops_merge, sha=repo.merge(BRANCH), pr=31, **common)
    return {"app": app, "repo": repo, "pr": pr, "merge": merge, "head": head, "forge": forge_emulator}


def test_the_experiment_runs_in_the_repository_own_environment(dvclive):
    assert dvclive["pr"].ok, dvclive["pr"].state.message
    assert importlib.util.find_spec("dvclive") is None  # opsflow's environment does not have it: the repo's does
    logs = run_logs(dvclive["pr"].id)
    assert "environment requirements-" in logs and "from requirements.txt:" in logs
    assert "running `dvc repro` in " in logs and "/ml-envs/requirements-" in logs


def test_nested_dvclive_metrics_and_plots_are_compared_and_linked_by_path(dvclive):
    body = dvclive["forge"].comments("github", FORGE_REPO, 31)[0]["body"]
    assert "no champion yet" in body and "| roc_auc.test (↑) |" in body and "| avg_prec.test (↑) |" in body
    assert "thresholds: roc_auc.test ≥ champion, avg_prec.test ≥ champion - 0.005" in body
    url = dvclive["pr"].result()["url"]
    assert (f"**Plots:** [eval/plots/sklearn/cm/test.json]({url}/artifacts/eval/plots/sklearn/cm/test.json), "
            f"[eval/plots/sklearn/cm/train.json]({url}/artifacts/eval/plots/sklearn/cm/train.json), "
            f"[eval/plots/sklearn/roc/test.json]") in body
    assert dvclive["forge"].statuses("github", FORGE_REPO, dvclive["head"])[-1]["state"] == "success"


def test_the_mlflow_run_has_the_flattened_metrics_params_plots_model_and_branch(dvclive):
    from mlflow.tracking import MlflowClient

    from blocks import MlflowServer

    client = MlflowClient(MlflowServer.load("local-mlflow").tracking_uri)
    run = client.get_run(dvclive["pr"].result()["run_id"])
    assert {"roc_auc.train", "roc_auc.test", "avg_prec.train", "avg_prec.test"} <= set(run.data.metrics)
    assert 0.5 < run.data.metrics["roc_auc.test"] <= 1 and run.data.params["train.n_est"] == "40"
    assert run.data.tags["opsflow.branch"] == BRANCH and run.data.tags["opsflow.pr"] == "31"
    rid = run.info.run_id
    assert {a.path for a in client.list_artifacts(rid, "eval/plots/sklearn/roc")} == {
        "eval/plots/sklearn/roc/test.json", "eval/plots/sklearn/roc/train.json"}
    model_files = {a.path for a in client.list_artifacts(rid, "model")}
    assert {"model/MLmodel", "model/model.pkl", "model/requirements.txt"} <= model_files


def test_the_registered_version_loads_with_pyfunc_and_predicts(dvclive):
    import mlflow.pyfunc
    import numpy as np

    from blocks import MlflowServer

    assert dvclive["merge"].ok, dvclive["merge"].state.message
    assert dvclive["merge"].result()["champion"] is True
    server = MlflowServer.load("local-mlflow")
    with server.get_client() as client:  # the block's URI for MLflow's module-level API too, for this block only
        model = mlflow.pyfunc.load_model(f"models:/{dvclive['app']}@champion")
        version = client.get_model_version_by_alias(dvclive["app"], "champion").version
        requirements = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{dvclive['app']}/{version}"))
    assert model.metadata.flavors["sklearn"]["sklearn_version"]
    valid = np.loadtxt(dvclive["repo"].work / "data" / "valid.csv", delimiter=",", skiprows=1)
    predicted = np.asarray(model.predict(valid[:, :-1]))
    assert predicted.shape == (len(valid),) and set(predicted.tolist()) <= {0, 1}
    assert (predicted == valid[:, -1]).mean() > 0.7  # the trained forest, not a constant
    pins = requirements.read_text().split()
    assert any(p.startswith("scikit-learn==") for p in pins) and any(p.startswith("dvclive==") for p in pins)
