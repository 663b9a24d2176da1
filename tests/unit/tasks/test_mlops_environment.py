"""The ML repository's own environment, built by the real uv from its uv.lock (packages from uv's cache: the
project's own lock holds them) and cached by the lock's hash; its experiment run with nothing of the worker's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from opsflow.core.errors import ExperimentFailed
from tasks.mlops.config import parse_ml_config
from tasks.mlops.environment import env_cache, find_environment, hold_environment, prepare_environment
from tasks.mlops.experiment import run_experiment

PROJECT = Path(__file__).with_name("test_mlops_uv_project")  # pyproject.toml + uv.lock: pyyaml==6.0.3


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("OPSFLOW_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copytree(PROJECT, tmp_path / "repo")
    return tmp_path / "repo"


def test_a_locked_project_gets_its_venv_once_and_a_changed_lock_a_new_one(checkout, monkeypatch):
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_not_for_experiments")
    env = prepare_environment.fn(checkout, None)
    assert env.spec.kind == "uv-lock" and env.built and env.packages["pyyaml"] == "6.0.3"
    assert env.declared == ["pyyaml"] and env.venv.startswith(str(checkout.parent / "cache" / "ml-envs"))
    assert prepare_environment.fn(checkout, None).built is False
    ml = parse_ml_config("model_name: m\nmetrics: {a: {}}\ncommand: [python, -c, \"import os, sys, yaml; "
                         "print('seen', sys.prefix, yaml.__version__, sorted(k for k in os.environ if "
                         "k.startswith(('PREFECT', 'OPSFLOW', 'AWS'))))\"]\n")
    done = run_experiment.fn(checkout, env, ml)
    assert done.command[0] == "python" and not done.with_remote
    # a new lock (another dependency) is another venv; the old one stays until the cache's bounds evict it
    (checkout / "pyproject.toml").write_text((checkout / "pyproject.toml").read_text().replace(
        '"pyyaml==6.0.3"', '"pyyaml==6.0.3", "packaging"'))
    (checkout / "uv.lock").write_text((checkout / "uv.lock").read_text() + "\n")
    other = find_environment(checkout, None)
    with hold_environment(checkout, other) as held:
        assert held.key != env.key and held.built
    assert len(env_cache().entries()) == 2


def test_what_the_experiment_prints_and_how_it_fails_reach_the_error(checkout, capsys):
    env = prepare_environment.fn(checkout, None)
    ml = parse_ml_config("model_name: m\nmetrics: {a: {}}\ncommand: [python, -c, \"import os, sys; "
                         "print(sorted(k for k in os.environ if k.startswith(('PREFECT', 'OPSFLOW')))); "
                         "import dvclive\"]\n")
    with pytest.raises(ExperimentFailed) as info:
        run_experiment.fn(checkout, env, ml)
    assert "`python -c import os" in info.value.summary
    assert info.value.summary.endswith("ModuleNotFoundError: No module named 'dvclive'; fix it in the branch "
                                       "and push again")
    assert info.value.last_lines[0] == "[]"  # the worker's Prefect and opsflow settings never reach it
    assert info.value.last_lines[-1] == "ModuleNotFoundError: No module named 'dvclive'"


def test_a_requirements_file_uv_cannot_satisfy_fails_with_uv_own_words(checkout, monkeypatch):
    monkeypatch.setenv("UV_OFFLINE", "1")  # both attempts from the cache: no index is asked for a package never made
    (checkout / "uv.lock").unlink()
    (checkout / "requirements.txt").write_text("pyyaml==0.0.0.1\n")
    with pytest.raises(ExperimentFailed, match=r"could not be built from requirements\.txt") as info:
        prepare_environment.fn(checkout, None)
    assert any("pyyaml" in line for line in info.value.last_lines)
    assert env_cache().entries() == []  # nothing half-built is left to be used


def test_dvc_repro_gets_the_remote_keys_through_config_local_while_it_runs_and_redacted(checkout):
    from dvc.repo import Repo

    from blocks import ObjectStore
    from opsflow.samples import git

    git("init", "-q", cwd=checkout)
    with Repo.init(str(checkout)) as repo, repo.config.edit() as conf:
        conf["core"]["remote"] = "storage"
        conf["remote"]["storage"] = {"url": "s3://bucket/prefix"}
    show = "import sys; print(open('.dvc/config.local').read(), sys.prefix); sys.exit(3)"
    (checkout / "dvc.yaml").write_text(f'stages:\n  show:\n    cmd: python -c "{show}"\n')
    store = ObjectStore(endpoint_url="http://127.0.0.1:9", bucket="bucket", access_key_id="AKIAEXAMPLE0000",
                        secret_access_key="secret-key-value-0000")
    env = prepare_environment.fn(checkout, None)
    ml = parse_ml_config("model_name: m\nmetrics: {a: {}}\nrepro_remote: true\n")
    with pytest.raises(ExperimentFailed) as info:
        run_experiment.fn(checkout, env, ml, store)
    seen = "\n".join(info.value.last_lines)
    assert "access_key_id = ***" in seen and "secret_access_key = ***" in seen and "secret-key-value" not in seen
    assert f"{env.venv}\n" in seen + "\n"  # the worker's dvc ran the stage with the venv's python
    assert info.value.summary.startswith("experiment failed: `dvc repro` exited with")
    assert not (checkout / ".dvc" / "config.local").exists()


@pytest.mark.parametrize("flavor, file", [("sklearn", "model.pkl"), ("pickle", "model.pkl"), ("pickle", "m.joblib")])
def test_the_packaged_model_loads_with_mlflow_pyfunc_and_predicts(tmp_path, flavor, file):
    import pickle

    import joblib
    import mlflow.pyfunc
    import numpy as np
    import sklearn
    from sklearn.linear_model import LogisticRegression

    from tasks.mlops.config import ModelDecl
    from tasks.mlops.environment import EnvSpec, ExperimentEnv
    from tasks.mlops.model import package_model

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    fitted = LogisticRegression().fit(x, [0, 0, 1, 1])
    if file.endswith(".joblib"):
        joblib.dump(fitted, tmp_path / file)
    else:
        (tmp_path / file).write_bytes(pickle.dumps(fitted))
    env = ExperimentEnv(EnvSpec("requirements"), "k", "/b", "3.11.7", {"scikit-learn": sklearn.__version__},
                        ["scikit-learn"])
    package = package_model.fn(tmp_path, ModelDecl(path=file, flavor=flavor), env)
    assert package.requirements == [f"mlflow=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}"]
    loaded = mlflow.pyfunc.load_model(package.path)
    assert list(loaded.predict(np.array([[0.0], [3.0]]))) == [0, 1]
    assert loaded.metadata.flavors["python_function"]["python_version"] == "3.11.7"
    assert ("sklearn" in loaded.metadata.flavors) == (flavor == "sklearn")
