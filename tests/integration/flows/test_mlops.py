"""The MLOps pipeline against the real stack: moto S3 (DVC remote), the MLflow server, Prefect, the forge emulation."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid

import pytest

from flows.mlops_merge import mlops_merge
from flows.mlops_pr import mlops_pr
from opsflow.samples import ml_sample_repo, save_ml_blocks
from tests.support.gitops_harness import run_flow

pytestmark = [pytest.mark.stack, pytest.mark.forge]

FORGE_REPO = "acme/ml-iris"


def _ml_app(prefix: str, forge_emulator, tmp_path_factory):
    """A fresh ML sample repository whose model is named like its application ``<prefix>-<uid>``,
    with its blocks and the ``mlops-forge`` block saved; returns (app, repo)."""
    from blocks import ObjectStore

    app = f"{prefix}-{uuid.uuid4().hex[:6]}"
    repo = ml_sample_repo(tmp_path_factory.mktemp(prefix), ObjectStore.load("opsflow-data"), f"dvc/{app}",
                          model_name=app)
    forge_emulator.block("github").save("mlops-forge", overwrite=True)
    save_ml_blocks(repo.url, name=app, forge_repo=FORGE_REPO)
    return app, repo


@pytest.fixture(scope="module")
def ml(stack, forge_emulator, tmp_path_factory):
    """PR #1 (first model), a second push to it, its merge, then PR #2 with worse params."""

    forge_emulator.reset()
    app, repo = _ml_app("ml", forge_emulator, tmp_path_factory)
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
    run_link = runs["pr1_push"].result()["url"]
    assert f"**Plots:** [plots/scores.png]({run_link}/artifacts/plots/scores.png)" in body  # linked, on MLflow
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


def test_dvc_pull_shows_its_progress_on_the_run(ml):
    from tests.support.gitops_harness import run_artifacts, run_logs

    run = ml["runs"]["pr1"]
    assert [float(a.data) for a in run_artifacts(run.id) if a.type == "progress"] == [100.0]
    lines = [line for line in run_logs(run.id).splitlines() if line.startswith("dvc pull: ") and "MB" in line]
    assert lines and lines[-1].endswith("MB (100%)"), lines


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


def _resume_when_paused(app: str, approve: bool, seen: dict) -> threading.Thread:
    """A thread that waits for ``app``'s merge run to pause, records its artifacts, then resumes it
    through the Prefect API with ``{"approve": approve}`` (as a person would in the UI)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    from tests.support.gitops_harness import run_artifacts

    paused = FlowRunFilter(name=FlowRunFilterName(like_=f"mlops-merge-{app}-"),
                           state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))

    def work() -> None:
        deadline = time.monotonic() + 300
        with get_client(sync_client=True) as client:
            while not (runs := client.read_flow_runs(flow_run_filter=paused)):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.5)
        seen["run_id"] = runs[0].id
        seen["report"] = "\n".join(str(a.data) for a in run_artifacts(runs[0].id))
        resume_flow_run(runs[0].id, run_input={"approve": approve})

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def approval(stack, forge_emulator, tmp_path_factory):
    """A first model's PR run, then its merge with approve_champion three times: no answer, reject, approve."""

    app, repo = _ml_app("mla", forge_emulator, tmp_path_factory)
    common = {"app": app, "forge_block": "mlops-forge"}
    head = repo.commit("PR #20", branch="pr-20")
    runs = {"pr": run_flow(mlops_pr, pr=20, sha=head, **common)}
    merge_sha = repo.merge("pr-20")
    gated = {**common, "sha": merge_sha, "pr": 20, "approve_champion": True}

    def aliases() -> dict:
        from mlflow.tracking import MlflowClient

        from blocks import MlflowServer

        return dict(MlflowClient(MlflowServer.load("local-mlflow").tracking_uri).get_registered_model(app).aliases)

    def status() -> str:
        last = forge_emulator.statuses("github", FORGE_REPO, merge_sha)[-1]
        return f"{last['state']}: {last['description']}"

    runs["timeout"] = run_flow(mlops_merge, approval_timeout=5, **gated)
    after, statuses = {"timeout": aliases()}, {"timeout": status()}
    seen = {"reject": {}, "approve": {}}
    for answer in ("reject", "approve"):
        thread = _resume_when_paused(app, answer == "approve", seen[answer])
        runs[answer] = run_flow(mlops_merge, approval_timeout=300, **gated)
        thread.join(timeout=60)
        after[answer], statuses[answer] = aliases(), status()
    return {"runs": runs, "aliases": after, "seen": seen, "statuses": statuses}


def test_champion_promotion_waits_for_approval(approval):
    runs, aliases, seen = approval["runs"], approval["aliases"], approval["seen"]
    assert runs["pr"].ok, runs["pr"].state.message
    # no answer: the run fails, the version is registered as staging, the champion alias does not exist
    assert not runs["timeout"].ok
    assert "never resumed" in runs["timeout"].state.message or "no approval within" in runs["timeout"].state.message
    assert aliases["timeout"] == {"staging": "1"}
    # rejected: completed, champion unchanged; the paused run showed the comparison
    assert runs["reject"].ok, runs["reject"].state.message
    assert seen["reject"]["run_id"] == runs["reject"].id
    assert "no champion yet" in seen["reject"]["report"] and "| accuracy (↑) |" in seen["reject"]["report"]
    assert "**Approval:** move `champion` to" in seen["reject"]["report"]
    assert runs["reject"].result() == {"version": "1", "run_id": runs["pr"].result()["run_id"], "champion": False,
                                       "approved": False}
    assert aliases["reject"] == {"staging": "1"}
    statuses = approval["statuses"]
    assert statuses["timeout"].startswith("success: ") and statuses["timeout"].endswith(
        "v1 registered; champion awaits approval")
    assert statuses["reject"].endswith("v1 registered, champion not approved")
    # approved: the champion alias moves to the registered version
    assert runs["approve"].ok, runs["approve"].state.message
    assert runs["approve"].result()["approved"] is True and runs["approve"].result()["champion"] is True
    assert aliases["approve"] == {"staging": "1", "champion": "1"}
    assert statuses["approve"].startswith("success: ") and statuses["approve"].endswith("v1 registered, champion")


def _champion_without(app: str, metric: str) -> str:
    """Register a champion for model ``app`` whose run lacks ``metric`` (as an old champion would); its version."""
    from mlflow.tracking import MlflowClient

    from blocks import MlflowServer

    client = MlflowClient(MlflowServer.load("local-mlflow").tracking_uri)
    exp = client.get_experiment_by_name(app)
    exp_id = exp.experiment_id if exp else client.create_experiment(app)
    run = client.create_run(exp_id, tags={"opsflow.pr": "0"})
    client.log_metric(run.info.run_id, "accuracy", 0.5)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(app)
    version = client.create_model_version(app, f"{run.info.artifact_uri}/model", run.info.run_id).version
    client.set_registered_model_alias(app, "champion", version)
    return str(version)


@pytest.fixture(scope="module")
def faults(stack, forge_emulator, tmp_path_factory):
    """PR runs that must fail: data not pushed, a failing experiment, MLflow down, a champion without a metric."""
    from blocks import MlflowServer
    from opsflow.samples import git, ml_sample_data

    forge_emulator.reset()
    app, repo = _ml_app("mlf", forge_emulator, tmp_path_factory)
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
    train = repo.read("train.py")
    repo.write("train.py", train.replace("import yaml\n", "import yaml\nfrom dvclive import Live\n"))
    bad_import = repo.commit("log with dvclive (not in requirements.txt)", branch="pr-11")
    repo.write("train.py", train)
    repo.write("params.yaml", "train:\n  C: 1.0\n  max_iter: 200\n")
    good = repo.commit("fine", branch="pr-12")
    runs = {"missing_cache": (10, not_pushed, run_flow(mlops_pr, pr=10, sha=not_pushed, **common)),
            "bad_experiment": (11, bad_import, run_flow(mlops_pr, pr=11, sha=bad_import, **common)),
            "mlflow_down": (12, good, run_flow(mlops_pr, pr=12, sha=good, mlflow_block="mlflow-down", **common))}
    champion = _champion_without(app, "log_loss")
    repo.write("params.yaml", "train:\n  C: 2.0\n  max_iter: 200\n")
    new_metric = repo.commit("C 2.0", branch="pr-14")
    runs["champion_lacks_metric"] = (14, new_metric, run_flow(mlops_pr, pr=14, sha=new_metric, **common))
    return {"runs": runs, "forge": forge_emulator, "repo": repo, "app": app, "common": common, "champion": champion}


@pytest.mark.parametrize("case, says", [
    ("missing_cache", "not in the remote cache"),
    ("bad_experiment", "`dvc repro` exited with 255: ModuleNotFoundError: No module named 'dvclive'"),
    ("mlflow_down", "did not answer"),
    ("champion_lacks_metric", "'log_loss' is missing from the champion"),
])
def test_faults_end_with_what_to_do_and_a_failed_status(faults, case, says):
    pr, sha, run = faults["runs"][case]
    assert not run.ok
    assert says in run.state.message or says in str(run.result(raise_on_failure=False))
    status = faults["forge"].statuses("github", FORGE_REPO, sha)[-1]
    assert status["state"] == "failure" and status["context"] == "mlops/eval" and says in status["description"]
    comment = faults["forge"].comments("github", FORGE_REPO, pr)[0]["body"]
    assert "evaluation failed" in comment and says in comment


def test_mlflow_down_fails_the_run_before_data_and_experiment(faults):
    from tests.support.gitops_harness import task_run_names

    names = task_run_names(faults["runs"]["mlflow_down"][2].id)
    assert "check-mlflow" in names and not any(n.startswith(("dvc-pull", "run-experiment")) for n in names)


def test_a_failed_experiment_shows_its_last_lines_in_the_comment_and_the_state_message(faults):
    _, _, run = faults["runs"]["bad_experiment"]
    comment = faults["forge"].comments("github", FORGE_REPO, 11)[0]["body"]
    tail = comment.split("**Last lines of the output:**", 1)[1]
    assert "Traceback (most recent call last):" in tail and "    from dvclive import Live" in tail
    assert "ModuleNotFoundError: No module named 'dvclive'" in tail and "ERROR: failed to reproduce 'train'" in tail
    assert "from dvclive import Live\nModuleNotFoundError: No module named 'dvclive'" in run.state.message


def test_a_champion_without_a_metric_is_named_and_left_alone(faults):
    from mlflow.tracking import MlflowClient

    from blocks import MlflowServer

    _, _, run = faults["runs"]["champion_lacks_metric"]
    assert f"(version {faults['champion']})" in str(run.result()) and "opsflow-ml.yaml" in str(run.result())
    client = MlflowClient(MlflowServer.load("local-mlflow").tracking_uri)
    assert client.get_model_version_by_alias(faults["app"], "champion").version == faults["champion"]


@contextlib.contextmanager
def s3_auth_enforced(store):
    """Make the S3 stand-in check signatures (moto accepts any key by default) and give a real key pair.

    Moto only knows keys made through its IAM API; authentication is switched on for the block's
    duration and off again (``/moto-api/reset-auth``), so other tests keep the stack's open store.
    """
    import boto3
    import requests

    iam = boto3.client("iam", endpoint_url=store.endpoint_url, region_name=store.region,
                       aws_access_key_id="AKIAOPSFLOWTEST0000", aws_secret_access_key="unused")
    user = f"opsflow-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    reset = f"{store.endpoint_url.rstrip('/')}/moto-api/reset-auth"
    requests.post(reset, data=b"0", timeout=10).raise_for_status()
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        requests.post(reset, data=b"inf", timeout=10).raise_for_status()


def test_wrong_object_store_credentials_fail_saying_so_without_the_secret(faults):
    from blocks import ObjectStore
    from tests.support.gitops_harness import run_artifacts, run_logs, task_run_names

    good = ObjectStore.load("opsflow-data")
    wrong_secret = f"wrong-secret-{uuid.uuid4().hex}"
    repo, forge = faults["repo"], faults["forge"]
    repo.write("params.yaml", "train:\n  C: 3.0\n  max_iter: 200\n")
    sha = repo.commit("C 3.0", branch="pr-15")
    with s3_auth_enforced(good) as (key_id, secret):
        def store(secret_key: str) -> ObjectStore:
            return ObjectStore(endpoint_url=good.endpoint_url, bucket=good.bucket, region=good.region,
                               access_key_id=key_id, secret_access_key=secret_key, max_attempts=1)

        # the real key pair can read the remote: what fails below is the secret, not the set-up
        assert store(secret).get_client().list_objects_v2(Bucket=good.bucket, MaxKeys=1)["ResponseMetadata"]
        store(wrong_secret).save("mlops-wrong-keys", overwrite=True)
        run = run_flow(mlops_pr, pr=15, sha=sha, store_block="mlops-wrong-keys", **faults["common"])
    assert not run.ok
    message = str(run.result())
    assert "the remote refused the credentials of object store" in message
    assert "fix the block's access keys" in message and "not in the remote cache" not in message
    status = forge.statuses("github", FORGE_REPO, sha)[-1]
    assert status["state"] == "failure" and status["context"] == "mlops/eval"
    assert "refused the credentials of object store" in status["description"]
    comment = forge.comments("github", FORGE_REPO, 15)[0]["body"]
    assert "evaluation failed" in comment and "fix the block's access keys" in comment
    seen = "\n".join([message, run.state.message or "", run_logs(run.id), comment, status["description"],
                      *(str(a.data) for a in run_artifacts(run.id))])
    assert wrong_secret not in seen and secret not in seen
    assert not any(name.startswith("run-experiment") for name in task_run_names(run.id))


def _outputs(nb) -> str:
    return "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))


def test_notebooks_run_against_the_stack_in_the_project_venv(ml, monkeypatch):
    import sys

    import nbformat
    from nbclient import NotebookClient

    from tests.support.paths import ROOT

    nbdir = ROOT / "notebooks"
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
