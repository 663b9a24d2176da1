"""The model an experiment wrote, as an MLflow model directory that ``mlflow.pyfunc.load_model`` loads.

``opsflow-ml.yaml`` ``model: {path, flavor}`` says what the repository produces:

* ``sklearn``: a pickled scikit-learn estimator; logged with MLflow's sklearn flavor (``mlflow.sklearn.load_model``
  and ``mlflow.pyfunc.load_model`` both load it);
* ``pickle``: any pickled (or ``.joblib``) object with ``predict``; logged as a pyfunc model whose loader
  (``opsflow_pickle_model.py``, shipped in the model's ``code/``) unpickles it;
* ``mlflow``: the path is already an MLflow model directory (the repository called ``mlflow.<flavor>.save_model``).

Undeclared, a directory holding ``MLmodel`` is ``mlflow`` and a file is ``pickle``. The model is never loaded in
opsflow's process (it was trained in the repository's own environment, with its versions): the MLmodel file is
written with MLflow's own ``Model``/``pyfunc.add_to_model`` from what the environment holds, and the model's
``requirements.txt`` pins the packages the repository declares at the versions it was trained with. Only
``mlflow.models`` is used (it works with mlflow-skinny, the build server's MLflow client).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from prefect import get_run_logger, task

from opsflow.core.errors import MlopsError
from tasks.mlops.config import ModelDecl
from tasks.mlops.environment import ExperimentEnv

LOADER = Path(__file__).with_name("opsflow_pickle_model.py")
#: The pyfunc flavor's keys as ``mlflow.pyfunc.add_to_model`` writes them; written through ``mlflow.models.Model``
#: because ``mlflow.pyfunc`` imports numpy, which the build server's MLflow client (mlflow-skinny) does not bring.
PYFUNC = "python_function"
PACKAGE_DIR = ".opsflow-mlflow-model"


@dataclass
class ModelPackage:
    """An MLflow model directory ready to log as the run's ``model/`` artifact."""

    path: str
    flavor: str
    source: str  # the file or directory the experiment wrote (relative to the checkout)
    requirements: list[str] = field(default_factory=list)


def model_requirements(env: ExperimentEnv, flavor: str) -> list[str]:
    """``name==version`` of what the repository declares (and MLflow, and scikit-learn for that flavor), at the
    versions the experiment's environment holds (pure)."""
    names = [*env.declared, "mlflow", *(["scikit-learn"] if flavor == "sklearn" else [])]
    pins = {n: env.packages[n] for n in names if n in env.packages}
    if "mlflow" not in pins:
        import mlflow

        pins["mlflow"] = mlflow.__version__
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def env_files(dest: Path, python_version: str, requirements: list[str]) -> None:
    """``requirements.txt``, ``python_env.yaml`` and ``conda.yaml`` as MLflow's own ``save_model`` writes them."""
    import yaml

    (dest / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))
    (dest / "python_env.yaml").write_text(yaml.safe_dump(
        {"python": python_version, "build_dependencies": ["pip"], "dependencies": ["-r requirements.txt"]},
        sort_keys=False))
    (dest / "conda.yaml").write_text(yaml.safe_dump(
        {"channels": ["conda-forge"], "dependencies": [f"python={python_version}", "pip", {"pip": requirements}],
         "name": "mlflow-env"}, sort_keys=False))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_mlflow_model(source: Path, flavor: str, env: ExperimentEnv, dest: Path) -> list[str]:
    """Write the MLflow model directory ``dest`` around the file ``source`` (``sklearn`` or ``pickle``)."""
    from mlflow.models import Model

    if flavor == "sklearn":
        if "scikit-learn" not in env.packages:
            raise MlopsError("opsflow-ml.yaml declares model flavor sklearn, but the experiment's environment has no "
                             "scikit-learn: add it to the requirements, or declare flavor: pickle")
        if source.suffix not in (".pkl", ".pickle"):
            raise MlopsError(f"model flavor sklearn loads a pickle file (.pkl), not {source.name}: declare "
                             f"flavor: pickle for a {source.suffix or 'suffix-less'} file")
    dest.mkdir(parents=True)
    requirements = model_requirements(env, flavor)
    env_files(dest, env.python_version, requirements)
    data = "model" + (source.suffix or ".pkl")
    _link_or_copy(source, dest / data)
    env_conf = {"conda": "conda.yaml", "virtualenv": "python_env.yaml"}
    model = Model()
    if flavor == "sklearn":
        model.add_flavor(PYFUNC, loader_module="mlflow.sklearn", model_path=data, env=env_conf,
                         python_version=env.python_version)
        model.add_flavor("sklearn", pickled_model=data, sklearn_version=env.packages["scikit-learn"],
                         serialization_format="pickle", code=None)
    else:
        (dest / "code").mkdir()
        shutil.copy2(LOADER, dest / "code" / LOADER.name)
        model.add_flavor(PYFUNC, loader_module=LOADER.stem, data=data, code="code", env=env_conf,
                         python_version=env.python_version)
    model.save(str(dest / "MLmodel"))
    return requirements


@task(name="package-model", task_run_name="package-model")
def package_model(workdir: Path, decl: ModelDecl, env: ExperimentEnv) -> ModelPackage:
    """The experiment's model as an MLflow model directory (see the module docstring).

    Args:
        workdir: the checkout, after the experiment ran.
        decl: ``model`` of opsflow-ml.yaml (path and flavor).
        env: the environment the experiment ran in (its Python and package versions).
    Returns:
        The directory to log as the run's ``model/`` artifact, its flavor and requirements.
    Raises:
        MlopsError: the experiment wrote no model at the declared path, or it does not fit the flavor.
    """
    source = workdir / decl.path
    if not source.exists():
        raise MlopsError(f"the experiment wrote no model at {decl.path} (opsflow-ml.yaml model.path): make it "
                         f"save its model there, or declare where it does")
    flavor = decl.flavor or ("mlflow" if (source / "MLmodel").is_file() else "pickle")
    if flavor == "mlflow":
        if not (source / "MLmodel").is_file():
            raise MlopsError(f"{decl.path} is not an MLflow model directory (no MLmodel file): save it with "
                             f"mlflow.<flavor>.save_model, or declare flavor sklearn or pickle")
        package = ModelPackage(str(source), flavor, decl.path)
    else:
        if not source.is_file():
            raise MlopsError(f"model flavor {flavor} needs a file, and {decl.path} is a directory: point "
                             f"model.path at the pickled model")
        dest = workdir / PACKAGE_DIR
        shutil.rmtree(dest, ignore_errors=True)
        package = ModelPackage(str(dest), flavor, decl.path, write_mlflow_model(source, flavor, env, dest))
    get_run_logger().info("model %s as an MLflow model (flavor %s)%s", decl.path, flavor,
                          f"; requirements {', '.join(package.requirements)}" if package.requirements else "")
    return package
