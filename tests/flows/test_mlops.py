"""The MLOps pipeline against the real stack: moto S3 (DVC remote), the MLflow server, Prefect, the forge emulation."""

from __future__ import annotations

import uuid

import pytest

from flows.mlops_merge import mlops_merge
from flows.mlops_pr import mlops_pr
from opsflow.samples import ml_sample_repo, save_ml_blocks
from tasks.mlops import Candidate, Champion, MlopsError, compare_to_champion
from tests.flows.gitops_harness import run_flow
from tests.forge_emulator import forge_emulator_fixture  # noqa: F401

pytestmark = [pytest.mark.stack, pytest.mark.forge]

FORGE_REPO = "acme/ml-iris"
SPEC = {"accuracy": {"direction": "higher", "threshold": 0.0}, "log_loss": {"direction": "lower", "threshold": 0.0}}


def test_compare_honours_directions_and_thresholds():
    champ = Champion("3", "r", {"accuracy": 0.80, "log_loss": 0.50}, {"train.C": "1.0"})
    better = compare_to_champion(Candidate({"accuracy": 0.82, "log_loss": 0.45}, {"train.C": "2.0"}), champ, SPEC)
    assert better.verdict == "beats champion" and [r.passed for r in better.rows] == [True, True]
    assert better.differing_params == {"train.C": ("1.0", "2.0")}
    assert round(better.rows[1].delta, 4) == -0.05 and round(better.rows[1].delta_pct, 2) == -10.0
    worse = compare_to_champion(Candidate({"accuracy": 0.82, "log_loss": 0.55}, {}), champ, SPEC)
    assert worse.verdict == "does not beat champion" and [r.passed for r in worse.rows] == [True, False]
    strict = {**SPEC, "accuracy": {"direction": "higher", "threshold": 0.05}}
    assert not compare_to_champion(Candidate({"accuracy": 0.82, "log_loss": 0.45}, {}), champ, strict).passed
    first = compare_to_champion(Candidate({"accuracy": 0.82, "log_loss": 0.45}, {}), None, SPEC)
    assert first.verdict == "no champion yet" and first.passed
    with pytest.raises(MlopsError, match="missing from the champion"):
        compare_to_champion(Candidate({"accuracy": 0.8, "log_loss": 0.4}, {}),
                            Champion("1", "r", {"accuracy": 0.8}, {}), SPEC)


@pytest.fixture(scope="module")
def ml(stack, forge_emulator, tmp_path_factory):
    """PR #1 (first model), a second push to it, its merge, then PR #2 with worse params."""
    from blocks import ObjectStore

    forge_emulator.reset()
    app = f"ml-{uuid.uuid4().hex[:6]}"
    repo = ml_sample_repo(tmp_path_factory.mktemp("ml"), ObjectStore.load("opsflow-data"), f"dvc/{app}")
    repo.write("opsflow-ml.yaml", repo.read("opsflow-ml.yaml").replace("model_name: ml-iris", f"model_name: {app}"))
    repo.commit("model name")
    forge_emulator.block("github").save("mlops-forge", overwrite=True)
    save_ml_blocks(repo.url, name=app, forge_repo=FORGE_REPO)
    common = {"app": app, "forge_block": "mlops-forge"}
    repo.write("params.yaml", "train:\n  C: 0.5\n  max_iter: 200\n")
    first = repo.commit("C 0.5", branch="pr-1")
    runs = {"pr1": run_flow(mlops_pr, pr=1, sha=first, **common)}
    repo.write("params.yaml", "train:\n  C: 1.0\n  max_iter: 200\n")
    head = repo.commit("C 1.0", branch="pr-1")
    runs["pr1_push"] = run_flow(mlops_pr, pr=1, sha=head, **common)
    merge_sha = repo.merge("pr-1")
    runs["merge"] = run_flow(mlops_merge, sha=merge_sha, pr=1, **common)
    runs["merge_again"] = run_flow(mlops_merge, sha=merge_sha, pr=1, **common)
    repo.write("params.yaml", "train:\n  C: 0.0005\n  max_iter: 200\n")
    worse = repo.commit("tiny C", branch="pr-2")
    runs["pr2"] = run_flow(mlops_pr, pr=2, sha=worse, **common)
    return {"app": app, "repo": repo, "runs": runs, "forge": forge_emulator, "shas": (first, head, merge_sha, worse)}


def test_pr_comment_is_one_and_updated_in_place(ml):
    runs, forge = ml["runs"], ml["forge"]
    for name in ("pr1", "pr1_push", "merge", "merge_again", "pr2"):
        assert runs[name].ok, f"{name}: {runs[name].state.message}"
    comments = forge.comments("github", FORGE_REPO, 1)
    assert len(comments) == 1
    body = comments[0]["body"]
    assert "no champion yet" in body and "| metric | candidate | champion | Δ | Δ% | pass/fail |" in body
    assert "accuracy (↑)" in body and "log_loss (↓)" in body
    assert "Data version (DVC):** `data`" in body and "[MLflow run](http" in body and "[Prefect run](" in body
    head = ml["shas"][1]
    assert forge.statuses("github", FORGE_REPO, head)[-1]["state"] == "success"
    assert forge.statuses("github", FORGE_REPO, head)[-1]["context"] == "mlops/eval"


def test_mlflow_run_carries_tags_params_metrics_and_artifacts(ml):
    from mlflow.tracking import MlflowClient

    from blocks import MlflowServer

    client = MlflowClient(MlflowServer.load("local-mlflow").tracking_uri)
    run = client.get_run(ml["runs"]["pr1_push"].result()["run_id"])
    _, head, _, _ = ml["shas"]
    assert run.data.tags["opsflow.git_sha"] == head and run.data.tags["opsflow.pr"] == "1"
    assert run.data.tags["opsflow.repo"] == FORGE_REPO and len(run.data.tags["opsflow.dvc.data"]) >= 32
    assert run.data.params["train.C"] == "1.0" and 0.5 < run.data.metrics["accuracy"] <= 1
    paths = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for d in ("model", "plots") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"model/model.pkl", "plots/scores.png"} <= paths


def test_merge_registers_one_version_and_moves_aliases(ml):
    from mlflow.tracking import MlflowClient

    from blocks import MlflowServer

    runs = ml["runs"]
    assert runs["merge"].result() == runs["merge_again"].result()
    assert runs["merge"].result()["run_id"] == runs["pr1_push"].result()["run_id"]
    client = MlflowClient(MlflowServer.load("local-mlflow").tracking_uri)
    versions = client.search_model_versions(f"name = '{ml['app']}'")
    assert len(versions) == 1
    assert client.get_model_version_by_alias(ml["app"], "champion").version == versions[0].version
    assert client.get_model_version_by_alias(ml["app"], "staging").version == versions[0].version
    assert versions[0].tags["opsflow.pr"] == "1"


def test_worse_params_do_not_beat_the_champion(ml):
    result = ml["runs"]["pr2"].result()
    assert result["verdict"] == "does not beat champion"
    body = ml["forge"].comments("github", FORGE_REPO, 2)[0]["body"]
    assert "does not beat champion" in body and "| train.C | 1.0 | 0.0005 |" in body
    assert "| log_loss (↓) |" in body and "| fail |" in body
    worse = ml["shas"][3]
    assert ml["forge"].statuses("github", FORGE_REPO, worse)[-1]["state"] == "failure"


@pytest.fixture(scope="module")
def faults(stack, forge_emulator, tmp_path_factory):
    """Three PR runs that must fail: data not pushed, a failing experiment, MLflow down."""
    from blocks import MlflowServer, ObjectStore
    from opsflow.samples import git, ml_sample_data

    forge_emulator.reset()
    app = f"mlf-{uuid.uuid4().hex[:6]}"
    repo = ml_sample_repo(tmp_path_factory.mktemp("mlf"), ObjectStore.load("opsflow-data"), f"dvc/{app}")
    forge_emulator.block("github").save("mlops-forge", overwrite=True)
    save_ml_blocks(repo.url, name=app, forge_repo=FORGE_REPO)
    MlflowServer(tracking_uri="http://127.0.0.1:9", max_retries=0, request_timeout=2).save("mlflow-down",
                                                                                         overwrite=True)
    common = {"app": app, "forge_block": "mlops-forge"}
    ml_sample_data(repo.work / "data", seed=99)
    git("rm", "-q", "--cached", "data.dvc", cwd=repo.work)
    from dvc.repo import Repo

    with Repo(str(repo.work)) as dvc:
        dvc.add(str(repo.work / "data"))  # new data, never pushed
    not_pushed = repo.commit("data not pushed", branch="pr-10")
    git("checkout", "-q", "main", cwd=repo.work)
    git("checkout", "-q", "--", ".", cwd=repo.work)
    repo.write("params.yaml", "train:\n  C: -1\n  max_iter: 200\n")
    bad_params = repo.commit("negative C", branch="pr-11")
    repo.write("params.yaml", "train:\n  C: 1.0\n  max_iter: 200\n")
    good = repo.commit("fine", branch="pr-12")
    runs = {"missing_cache": (10, not_pushed, run_flow(mlops_pr, pr=10, sha=not_pushed, **common)),
            "bad_experiment": (11, bad_params, run_flow(mlops_pr, pr=11, sha=bad_params, **common)),
            "mlflow_down": (12, good, run_flow(mlops_pr, pr=12, sha=good, mlflow_block="mlflow-down", **common))}
    return {"runs": runs, "forge": forge_emulator}


@pytest.mark.parametrize("case, says", [
    ("missing_cache", "not in the remote cache"),
    ("bad_experiment", "experiment failed"),
    ("mlflow_down", "did not answer"),
])
def test_faults_end_with_what_to_do_and_a_failed_status(faults, case, says):
    pr, sha, run = faults["runs"][case]
    assert not run.ok
    assert says in run.state.message or says in str(run.result(raise_on_failure=False))
    status = faults["forge"].statuses("github", FORGE_REPO, sha)[-1]
    assert status["state"] == "failure" and status["context"] == "mlops/eval" and says in status["description"]
    comment = faults["forge"].comments("github", FORGE_REPO, pr)[0]["body"]
    assert "evaluation failed" in comment and says in comment


def _outputs(nb) -> str:
    return "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))


def test_notebooks_run_against_the_stack_in_the_project_venv(ml, monkeypatch):
    import sys
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    nbdir = Path(__file__).resolve().parents[2] / "notebooks"
    monkeypatch.setenv("OPSFLOW_NB_MODEL", ml["app"])
    monkeypatch.setenv("OPSFLOW_NB_APP", ml["app"])
    monkeypatch.setenv("OPSFLOW_NB_SHA", ml["shas"][3])
    monkeypatch.setenv("OPSFLOW_NB_PR", "3")
    texts = {}
    for name in ("explore_experiments.ipynb", "trigger_deployment.ipynb"):
        nb = nbformat.read(nbdir / name, as_version=4)
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(nbdir)}}).execute()
        texts[name] = _outputs(nb)
        assert sys.executable.rsplit("/bin/", 1)[0] in texts[name], texts[name][:300]
    explore = texts["explore_experiments.ipynb"]
    assert "champion: version 1" in explore and "does not beat champion" in explore
    assert "states:" in texts["trigger_deployment.ipynb"] and texts["trigger_deployment.ipynb"].rstrip().endswith(
        "Completed"), texts["trigger_deployment.ipynb"][-500:]
