"""Which deployment a delivery starts: the repository's Application block decides the pipeline."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from blocks.names import DEFAULT_DEPLOYMENT, TRUSTED_LABEL
from flows.gitops_merge import gitops_merge
from flows.gitops_pr import gitops_pr
from flows.mlops_merge import mlops_merge
from flows.mlops_pr import mlops_pr
from opsflow.core.errors import RemoteError
from opsflow.webhook.payloads import Ignored, Trigger

# pipeline → (pull request flow, merge flow); the deployment is ``<flow>/<deployment name>``
PIPELINES = {
    "gitops": (gitops_pr.name, gitops_merge.name),
    "mlops": (mlops_pr.name, mlops_merge.name),
}
REFRESH_S = 5.0


@dataclass(frozen=True)
class AppInfo:
    name: str
    default_branch: str
    ml_project: bool
    trusted_label: str = TRUSTED_LABEL


@dataclass(frozen=True)
class Route:
    """A deployment to run with these parameters, deduplicated by ``idempotency_key``."""

    deployment: str
    parameters: dict
    idempotency_key: str
    app: str


def route(trigger: Trigger, app: AppInfo | None, forge_block: str,
          deployment: str = DEFAULT_DEPLOYMENT) -> Route | Ignored:
    """The run a trigger asks for (pure): PR → the PR deployment (a label event only for the application's
    trusted label: the run a held pull request waits for); merge, push to the default branch or a version
    tag → the merge deployment."""
    if app is None:
        return Ignored(f"no application is configured for {trigger.repo}")
    pr_flow, merge_flow = PIPELINES["mlops" if app.ml_project else "gitops"]
    pr_deployment, merge_deployment = f"{pr_flow}/{deployment}", f"{merge_flow}/{deployment}"
    params = {"app": app.name, "sha": trigger.sha, "forge_block": forge_block}
    if trigger.stage == "pr" and trigger.labels and app.trusted_label not in trigger.labels:
        return Ignored(f"label(s) {', '.join(trigger.labels)}: not {app.name}'s trusted label {app.trusted_label!r}")
    if trigger.stage == "pr":
        params["pr"] = trigger.pr
        if app.ml_project and trigger.head_branch:
            params["branch"] = trigger.head_branch  # mlops-pr tags its MLflow run with it (opsflow.branch)
        return Route(pr_deployment, params, trigger.idempotency_key, app.name)
    if trigger.stage == "push" and trigger.branch != app.default_branch:
        return Ignored(f"push to {trigger.branch}, not the default branch {app.default_branch}")
    if trigger.stage == "tag":
        params.update(branch=app.default_branch, version=trigger.version)
    else:
        params["branch"] = trigger.branch
        if trigger.pr:
            params["pr"] = trigger.pr
    return Route(merge_deployment, params, trigger.idempotency_key, app.name)


class AppIndex:
    """forge repository (``owner/name``) → application, read from the Application blocks.

    Reloaded on a miss, at most every ``REFRESH_S`` seconds, so a new application is picked up
    without a restart.
    """

    def __init__(self, load=None):
        self._load = load or load_applications
        self._apps: dict[str, AppInfo] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def get(self, repo: str) -> AppInfo | None:
        """The repository's application; reloads the index on a miss.

        Raises:
            RemoteError: the repository is not known yet and the Prefect API cannot be read.
        """
        with self._lock:
            if repo not in self._apps and time.monotonic() - self._loaded_at > REFRESH_S:
                try:
                    self._apps = self._load()
                except Exception as exc:  # noqa: BLE001 - httpx/Prefect errors: the API is down
                    raise RemoteError(f"cannot read the application blocks: {type(exc).__name__}") from None
                self._loaded_at = time.monotonic()
            return self._apps.get(repo)


def load_applications() -> dict[str, AppInfo]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        docs = client.read_block_documents_by_type(block_type_slug="opsflow-application", include_secrets=False)
    apps = {}
    for doc in docs:
        data = doc.data or {}
        if data.get("forge_repo"):
            apps[data["forge_repo"]] = AppInfo(name=data["name"], default_branch=data.get("default_branch", "main"),
                                               ml_project=bool(data.get("ml_project")),
                                               trusted_label=data.get("trusted_label") or TRUSTED_LABEL)
    return apps
