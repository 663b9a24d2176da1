"""The MLflow tracking server experiments are logged to."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, model_validator

from blocks.fields import HttpUrl, Secret
from blocks.schema import CachedJsonSchema


class MlflowServer(CachedJsonSchema, Block):
    """An MLflow tracking server (artifacts are proxied by the server to object storage)."""

    _block_type_name = "opsflow mlflow server"
    _block_type_slug = "opsflow-mlflow-server"
    _description = "An MLflow tracking server and its credentials."

    tracking_uri: HttpUrl = Field(description="Tracking server URL, e.g. http://mlflow.lan:5000.")
    username: str | None = Field(default=None, description="Basic-auth user, when the server has auth enabled.")
    password: Secret = Field(default=None, description="Basic-auth password.")
    request_timeout: int = Field(default=30, gt=0, description="Seconds per tracking API request.")
    max_retries: int = Field(default=5, ge=0, le=20, description="Retries of a failed tracking API request.")

    @model_validator(mode="after")
    def _credentials_pair(self) -> MlflowServer:
        if bool(self.username) != bool(self.password):
            raise ValueError("username and password must be given together")
        return self

    def client_env(self) -> dict[str, str]:
        """Environment variables the MLflow client reads (pass to a child process, never argv)."""
        env = {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.request_timeout),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.max_retries),
        }
        if self.username and self.password is not None:
            env["MLFLOW_TRACKING_USERNAME"] = self.username
            env["MLFLOW_TRACKING_PASSWORD"] = self.password.get_secret_value()
        return env

    @contextlib.contextmanager
    def get_client(self) -> Iterator[Any]:
        """An ``MlflowClient`` with this server's URI, timeouts and credentials set in the environment for
        the duration of the ``with`` block (MLflow's client reads them there; they never go in argv)."""
        from mlflow.tracking import MlflowClient

        env = self.client_env()
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
