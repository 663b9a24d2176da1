"""MLflow pyfunc loader for a model an ML repository saved with pickle or joblib (``flavor: pickle``).

Shipped inside each such MLflow model (its ``code/`` directory) and imported by ``mlflow.pyfunc.load_model``
as the ``loader_module`` of the ``python_function`` flavor, so loading needs MLflow and the packages the model
was trained with, never opsflow. It imports nothing but the standard library (and joblib for ``.joblib`` files).
"""

from __future__ import annotations

import pickle
from typing import Any


class PickledModel:
    """The unpickled object, predicting through its own ``predict``."""

    def __init__(self, model: Any):
        self.model = model

    def predict(self, model_input: Any, params: dict | None = None) -> Any:
        """``model.predict(model_input)``; ``params`` (MLflow's inference parameters) are not used."""
        return self.model.predict(model_input)


def _load_pyfunc(data_path: str) -> PickledModel:
    if data_path.endswith(".joblib"):
        import joblib

        return PickledModel(joblib.load(data_path))
    with open(data_path, "rb") as handle:
        return PickledModel(pickle.load(handle))  # noqa: S301 - the model the repository's own experiment wrote
