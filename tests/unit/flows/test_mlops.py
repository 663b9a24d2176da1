"""The MLOps champion comparison, without a stack (the pipeline against the real stack:
tests/integration/flows/test_mlops.py)."""

from __future__ import annotations

import pytest

from opsflow.core.errors import InvalidInput, MlopsError
from tasks.mlops.champion import Candidate, Champion, compare_to_champion

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


# --- issue 19: what a repository declares, what DVC says it produced, how a failure reads ------------------------

def _row(direction: str, threshold: float):
    from tasks.mlops.champion import MetricRow

    return MetricRow("m", direction, threshold, 0.5, 0.4, 0.1, 25.0, True)


@pytest.mark.parametrize("direction, threshold, text", [
    ("higher", 0.0, "m ≥ champion"), ("higher", -0.0, "m ≥ champion"), ("higher", 0.01, "m ≥ champion + 0.01"),
    ("higher", -0.02, "m ≥ champion - 0.02"), ("lower", 0.0, "m ≤ champion"), ("lower", -0.0, "m ≤ champion"),
    ("lower", 0.01, "m ≤ champion - 0.01"), ("lower", -0.5, "m ≤ champion + 0.5"),
])
def test_thresholds_read_as_the_bound_the_candidate_must_reach(direction, threshold, text):
    from tasks.mlops.report import threshold_text

    assert threshold_text(_row(direction, threshold)) == text


def test_plot_links_are_labelled_by_their_path():
    from tasks.mlops.champion import Comparison
    from tasks.mlops.report import render_report

    body = render_report(Comparison("no champion yet", True, [_row("lower", 0.0)]), "m", {}, "http://mlflow/r",
                         None, None, ["eval/plots/sklearn/roc/test.json", "eval/plots/sklearn/roc/train.json"])
    link = "[eval/plots/sklearn/roc/{0}.json](http://mlflow/r/artifacts/eval/plots/sklearn/roc/{0}.json)"
    assert f"**Plots:** {link.format('test')}, {link.format('train')}" in body
    assert "thresholds: m ≤ champion" in body and "-0" not in body


def test_opsflow_ml_yaml_declarations_and_errors_naming_the_field():
    from tasks.mlops.config import EnvironmentDecl, parse_ml_config

    ml = parse_ml_config("model_name: m\nmetrics:\n  eval.acc: {direction: higher}\nenvironment:\n"
                         "  requirements: [requirements.txt]\n  python: '3.11'\nenv: {OMP_NUM_THREADS: '2'}\n"
                         "model: {path: out/model.joblib, flavor: pickle}\nrepro_remote: true\n")
    assert ml.metrics == {"eval.acc": {"direction": "higher", "threshold": 0.0}}
    assert ml.environment == EnvironmentDecl(requirements=["requirements.txt"], python="3.11")
    assert ml.env == {"OMP_NUM_THREADS": "2"} and ml.model.flavor == "pickle" and ml.repro_remote is True
    assert parse_ml_config("model_name: m\nmetrics: {a: {}}\nenvironment: none\n").environment == "none"
    bad = {
        "model_name: m\nmetrics: {a: {}}\ncommand: python train.py\n": "command must be a list of strings",
        "model_name: m\nmetrics: {}\n": "metrics",
        "metrics: {a: {}}\n": "model_name",
        "model_name: m\nmetrics: {a: {direction: up}}\n": "metrics.a.direction",
        "model_name: m\nmetrics: {a: {}}\nenv: {PATH: /x}\n": "env: ",
        "model_name: m\nmetrics: {a: {}}\nmodel: {flavor: onnx}\n": "model.flavor",
        "model_name: m\nmetrics: {a: {}}\nenvironment: {requirements: [../x.txt]}\n": "environment",
        "model_name: m\nmetrics: {a: {}}\nenviroment: {}\n": "enviroment",
        "model_name: [\n": "not valid YAML",
    }
    for text, says in bad.items():
        with pytest.raises(InvalidInput, match=r"^opsflow-ml\.yaml") as info:
            parse_ml_config(text)
        assert says in str(info.value), (text, str(info.value))


def test_nested_metrics_are_flattened_with_dots_and_shared_keys_qualified_by_file():
    from tasks.mlops.results import flatten, merge_files, numeric

    dvclive = {"avg_prec": {"train": 0.9, "test": 0.8}, "roc_auc": {"test": 0.7}, "step": 3, "ok": True,
               "name": "x", "curve": [1, 2]}
    flat = flatten(dvclive)
    assert flat == {"avg_prec.train": 0.9, "avg_prec.test": 0.8, "roc_auc.test": 0.7, "step": 3, "ok": True,
                    "name": "x", "curve": [1, 2]}
    assert numeric(flat) == {"avg_prec.train": 0.9, "avg_prec.test": 0.8, "roc_auc.test": 0.7, "step": 3.0}
    merged = merge_files({"eval/metrics.json": {"acc": 1, "loss": 2}, "train/metrics.json": {"acc": 3}})
    assert merged == {"eval/metrics.json:acc": 1, "loss": 2, "train/metrics.json:acc": 3}
    assert numeric({"a b+c": 1.0, "nan": float("nan")}) == {"a b_c": 1.0}


def _dvc_repo(root):
    from dvc.repo import Repo

    from opsflow.samples import git

    git("init", "-q", cwd=root)
    Repo.init(str(root)).close()


def test_results_are_read_as_dvc_yaml_declares_them(tmp_path, run_logger_off):
    from tasks.mlops.results import read_dvc_results, read_results

    _dvc_repo(tmp_path)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  evaluate:\n    cmd: python evaluate.py\n    outs: [eval]\n    params: [train.seed]\n"
        "metrics: [eval/metrics.json]\n"
        "plots:\n  - ROC:\n      x: fpr\n      y: {eval/plots/sklearn/roc/test.json: tpr}\n"
        "  - eval/plots/images\n")
    (tmp_path / "params.yaml").write_text("train: {seed: 7, trees: {n: 30}}\n")
    (tmp_path / "eval" / "plots" / "sklearn" / "roc").mkdir(parents=True)
    (tmp_path / "eval" / "plots" / "images").mkdir(parents=True)
    (tmp_path / "eval" / "metrics.json").write_text('{"roc_auc": {"train": 1.0, "test": 0.91}, "step": 2}')
    (tmp_path / "eval" / "plots" / "sklearn" / "roc" / "test.json").write_text('{"roc": [{"fpr": 0, "tpr": 0}]}')
    (tmp_path / "eval" / "plots" / "images" / "importance.png").write_bytes(b"\x89PNG\r\n")
    metrics, params, plots = read_dvc_results(tmp_path)
    assert metrics == {"eval/metrics.json": {"roc_auc.train": 1.0, "roc_auc.test": 0.91, "step": 2}}
    assert params == {"params.yaml": {"train.seed": 7, "train.trees.n": 30}}
    assert plots == ["eval/plots/images/importance.png", "eval/plots/sklearn/roc/test.json"]
    candidate = read_results.fn(tmp_path)
    assert candidate.metrics["roc_auc.test"] == 0.91 and candidate.params == {"train.seed": "7", "train.trees.n": "30"}
    assert candidate.metric_files == ["eval/metrics.json"]
    (tmp_path / "eval" / "metrics.json").unlink()
    with pytest.raises(MlopsError, match=r"declares the metrics file eval/metrics.json, but .* does not exist"):
        read_results.fn(tmp_path)


def test_without_declared_metrics_the_top_level_metrics_json_is_read(tmp_path, run_logger_off):
    from tasks.mlops.results import read_results

    _dvc_repo(tmp_path)
    with pytest.raises(MlopsError, match=r"declare them in dvc\.yaml"):
        read_results.fn(tmp_path)
    (tmp_path / "metrics.json").write_text('{"accuracy": 0.8, "per_class": {"a": 0.7}}')
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "scores.png").write_bytes(b"png")
    candidate = read_results.fn(tmp_path)
    assert candidate.metrics == {"accuracy": 0.8, "per_class.a": 0.7} and candidate.plots == ["plots/scores.png"]


def test_a_missing_metric_names_what_the_candidate_has():
    candidate = Candidate({"roc_auc.test": 0.9}, {}, metric_files=["eval/metrics.json"])
    with pytest.raises(MlopsError, match=r"'accuracy' is missing .*eval/metrics.json has roc_auc.test"):
        compare_to_champion(candidate, None, {"accuracy": {"direction": "higher"}})


def test_the_cause_of_a_failure_is_the_last_exception_line():
    from tasks.mlops.experiment import failure_cause

    repro = ["Running stage 'train':", "> python src/train.py", "Traceback (most recent call last):",
             '  File "src/train.py", line 3, in <module>', "    from dvclive import Live",
             "ModuleNotFoundError: No module named 'dvclive'",
             "ERROR: failed to reproduce 'train': failed to run: python src/train.py, exited with 1"]
    assert failure_cause(repro) == "ModuleNotFoundError: No module named 'dvclive'"
    assert failure_cause(["x", "ERROR: failed to reproduce 'train': dependency 'data' does not exist", ""]) == \
        "ERROR: failed to reproduce 'train': dependency 'data' does not exist"
    assert failure_cause(["sklearn.exceptions.NotFittedError: not fitted", "done"]).startswith("sklearn.exceptions")
    assert failure_cause(["killed", "  "]) == "killed" and failure_cause([]) == "no output"


def test_a_failed_experiment_keeps_its_last_lines_through_pickling_and_into_the_report():
    import pickle

    from flows.common import output_block
    from opsflow.core.errors import ExperimentFailed

    failed = ExperimentFailed("experiment failed: `dvc repro` exited with 255: E", ["a", "E"])
    exc = pickle.loads(pickle.dumps(failed))  # noqa: S301 - our own bytes: results and states are pickled
    assert exc.last_lines == ["a", "E"] and str(exc).endswith("--- last output ---\na\nE")
    block = output_block(["print(```)", "E"])
    assert block.endswith("\n\n````text\nprint(```)\nE\n````\n")  # the fence outlasts the output's backticks
    assert output_block([]) == ""


def test_repro_needs_the_remote_only_for_remote_data(tmp_path):
    from tasks.mlops.experiment import repro_needs_remote

    assert not repro_needs_remote(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages:\n  train:\n    cmd: python t.py\n    deps: [data, t.py]\n"
                                       "    outs: [{model.pkl: {cache: true}}]\n")
    assert not repro_needs_remote(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages:\n  get:\n    cmd: python g.py\n    deps: [remote://storage/raw]\n")
    assert repro_needs_remote(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages:\n  get:\n    foreach: [a, b]\n    do:\n      cmd: x ${item}\n"
                                       "      outs:\n        - s3://bucket/${item}:\n            cache: false\n")
    assert repro_needs_remote(tmp_path)


def test_dvc_reads_the_remote_keys_from_config_local_only_while_the_command_runs(tmp_path):
    from dvc.repo import Repo

    from blocks import ObjectStore
    from tasks.mlops.experiment import remote_credentials

    _dvc_repo(tmp_path)
    with Repo(str(tmp_path)) as repo, repo.config.edit() as conf:
        conf["core"]["remote"] = "storage"
        conf["remote"]["storage"] = {"url": "s3://bucket/prefix"}
    store = ObjectStore(endpoint_url="http://127.0.0.1:9", bucket="bucket", access_key_id="AKIAEXAMPLE0000",
                        secret_access_key="secret-key-value-0000")
    with remote_credentials(tmp_path, store):
        local = tmp_path / ".dvc" / "config.local"
        assert local.stat().st_mode & 0o777 == 0o600
        with Repo(str(tmp_path)) as repo:
            assert repo.config["remote"]["storage"]["secret_access_key"] == "secret-key-value-0000"
    assert not local.exists()
    assert "secret-key-value" not in (tmp_path / ".dvc" / "config").read_text()


def test_the_environment_is_found_from_the_repository_files_and_keyed_by_their_content(tmp_path):
    from tasks.mlops.config import EnvironmentDecl
    from tasks.mlops.environment import declared_names, env_key, find_environment

    assert find_environment(tmp_path, None).kind == "none"
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["scikit-learn>=1.4"]\n')
    assert find_environment(tmp_path, None).kind == "pyproject"
    (tmp_path / "requirements.txt").write_text("dvclive>=3.40  # logging\n-r requirements-base.txt\nPyYAML\n")
    (tmp_path / "requirements-base.txt").write_text("numpy\n")
    spec = find_environment(tmp_path, None)
    assert (spec.kind, spec.files) == ("requirements", ["requirements-base.txt", "requirements.txt"])
    assert declared_names(tmp_path, spec) == ["dvclive", "numpy", "pyyaml"]
    key = env_key(tmp_path, spec)
    assert env_key(tmp_path, find_environment(tmp_path, None)) == key
    (tmp_path / "uv.lock").write_text("version = 1\n")
    locked = find_environment(tmp_path, None)
    assert (locked.kind, locked.files) == ("uv-lock", ["pyproject.toml", "uv.lock"])
    assert declared_names(tmp_path, locked) == ["scikit-learn"]
    declared = find_environment(tmp_path, EnvironmentDecl(requirements=["requirements.txt"], python="3.12"))
    assert (declared.kind, declared.files, declared.python) == ("requirements", ["requirements.txt"], "3.12")
    (tmp_path / "requirements.txt").write_text("dvclive>=3.41\n")
    assert env_key(tmp_path, spec) != key
    assert find_environment(tmp_path, "none").kind == "none"
    with pytest.raises(InvalidInput, match=r"environment.requirements names \['nope.txt'\]"):
        find_environment(tmp_path, EnvironmentDecl(requirements=["nope.txt"]))
    with pytest.raises(InvalidInput, match=r"environment\.project 'sub' has no pyproject\.toml"):
        find_environment(tmp_path, EnvironmentDecl(project="sub"))


def test_the_experiment_sees_its_venv_and_nothing_of_the_worker(tmp_path, monkeypatch):
    from tasks.mlops.environment import EnvSpec, ExperimentEnv, experiment_environment

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_do_not_pass")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-pass")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.lan:3128")
    env = ExperimentEnv(EnvSpec("requirements", ["requirements.txt"]), "k", "/cache/ml-envs/k/bin", "3.11.7", {}, [])
    seen = experiment_environment(env, tmp_path, {"OMP_NUM_THREADS": "2"})
    assert seen["PATH"].split(":")[0] == "/cache/ml-envs/k/bin" and seen["VIRTUAL_ENV"] == "/cache/ml-envs/k"
    assert seen["HOME"] == str(tmp_path) and seen["OMP_NUM_THREADS"] == "2" and seen["HTTPS_PROXY"]
    assert not [k for k in seen if k.startswith(("PREFECT_", "AWS_", "OPSFLOW_"))]


def test_model_requirements_pin_what_the_repository_declares_at_the_trained_versions():
    from tasks.mlops.environment import EnvSpec, ExperimentEnv
    from tasks.mlops.model import model_requirements

    env = ExperimentEnv(EnvSpec("requirements"), "k", "/b", "3.11.7",
                        {"scikit-learn": "1.9.1", "dvclive": "3.49.1", "mlflow": "3.1.0", "numpy": "2.4.6"},
                        ["dvclive", "scikit-learn"])
    assert model_requirements(env, "sklearn") == ["dvclive==3.49.1", "mlflow==3.1.0", "scikit-learn==1.9.1"]


def test_an_ml_application_needs_no_component_and_a_gitops_one_does():
    from pydantic import ValidationError

    from blocks.application import Application

    app = Application(name="ml", repository="file:///tmp/ml.git", ml_project=True)
    assert app.components == []
    with pytest.raises(ValidationError, match=r"components\n  declare at least one component \(an ml_project"):
        Application(name="shop", repository="file:///tmp/shop.git")


def test_the_run_logs_each_plot_at_its_path_and_the_model_directory_under_model(tmp_path):
    from tasks.mlops.model import ModelPackage
    from tasks.mlops.tracking import artifact_files

    model = tmp_path / ".opsflow-mlflow-model"
    (model / "code").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "code" / "loader.py").write_text("")
    candidate = Candidate({"m": 1.0}, {}, ["roc.json", "eval/plots/sklearn/roc/test.json"])
    plots = [(str(tmp_path / "roc.json"), None),
             (str(tmp_path / "eval/plots/sklearn/roc/test.json"), "eval/plots/sklearn/roc")]
    assert artifact_files(tmp_path, candidate, ModelPackage(str(model), "pickle", "model.pkl")) == [
        *plots, (str(model / "MLmodel"), "model"), (str(model / "code" / "loader.py"), "model/code")]
    assert artifact_files(tmp_path, candidate, None) == plots
