"""Deploys to Kubernetes with the official client: server-side apply, rollout status bounded by the
Deployment's progressDeadlineSeconds, rollback to the previous pod template, blue-green switch.

The decisions (is the rollout done, failed, still going; which colour is next) are pure functions,
tested without a cluster; the cluster calls run only where a kubeconfig points at one.
"""

from __future__ import annotations

import copy
import time

from prefect import get_run_logger, task

from blocks import KubernetesTarget
from opsflow.core.errors import DeployFailed, RemoteError
from tasks.deploy.plan import ComponentRelease, kubernetes_manifests

FIELD_MANAGER = "opsflow"
COMPLETE, PROGRESSING, FAILED = "complete", "progressing", "failed"


def rollout_verdict(deployment: dict) -> tuple[str, str]:
    """(complete | progressing | failed, why) for a Deployment as the API returns it (a dict)."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation", 0)
    wanted = spec.get("replicas", 1)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return FAILED, cond.get("message") or "progress deadline exceeded"
    if status.get("observedGeneration", 0) < generation:
        return PROGRESSING, "the controller has not seen the new spec yet"
    updated, available = status.get("updatedReplicas", 0), status.get("availableReplicas", 0)
    total = status.get("replicas", 0)
    if updated < wanted:
        return PROGRESSING, f"{updated} of {wanted} replicas updated"
    if total > updated:
        return PROGRESSING, f"{total - updated} old replicas still terminating"
    if available < wanted:
        return PROGRESSING, f"{available} of {wanted} updated replicas available"
    return COMPLETE, f"{available} of {wanted} replicas available"


def next_colour(service: dict | None) -> str:
    """Blue-green: the colour not selected by the Service now (blue for a first deploy)."""
    current = ((service or {}).get("spec") or {}).get("selector", {}).get("opsflow.org/colour")
    return "green" if current == "blue" else "blue"


def previous_manifest(current: dict | None, planned: dict) -> dict | None:
    """The manifest that puts ``current``'s pod template back (the rollback target), in apply form."""
    if not current:
        return None
    back = copy.deepcopy(planned)
    back["spec"]["template"] = copy.deepcopy(current["spec"]["template"])
    back["spec"]["replicas"] = current["spec"].get("replicas", planned["spec"]["replicas"])
    return back


def _clients(target: KubernetesTarget):
    from kubernetes.dynamic import DynamicClient

    api = target.get_api_client()
    dyn = DynamicClient(api)
    return api, dyn, dyn.resources.get(api_version="apps/v1", kind="Deployment"), \
        dyn.resources.get(api_version="v1", kind="Service")


def _read(resource, name: str, namespace: str, timeout: float) -> dict | None:
    from kubernetes.dynamic.exceptions import NotFoundError

    try:
        return resource.get(name=name, namespace=namespace, _request_timeout=timeout).to_dict()
    except NotFoundError:
        return None


def _apply(dyn, resource, body: dict, timeout: float) -> dict:
    return dyn.server_side_apply(resource, body=body, field_manager=FIELD_MANAGER, force_conflicts=True,
                                 _request_timeout=timeout).to_dict()


def _wait(resource, name: str, namespace: str, deadline_s: float, timeout: float) -> tuple[str, str]:
    end = time.monotonic() + deadline_s + 10  # the controller marks the deadline; allow it to say so
    verdict = (PROGRESSING, "not read yet")
    while time.monotonic() < end:
        current = _read(resource, name, namespace, timeout)
        verdict = rollout_verdict(current or {})
        if verdict[0] != PROGRESSING:
            return verdict
        time.sleep(2)
    return FAILED, f"not complete within {deadline_s:g}s: {verdict[1]}"


@task(name="rollout-kubernetes", task_run_name="rollout-{release.component}-{target.name}")
def rollout_kubernetes(target: KubernetesTarget, release: ComponentRelease) -> str:
    """Apply the release (rolling: one Deployment; blue-green: the other colour, then the Service
    switch) and wait for it; on failure put the previous template (or colour) back and raise."""
    from kubernetes.client.exceptions import ApiException

    logger = get_run_logger()
    api, dyn, deployments, services = _clients(target)
    ns, timeout = target.namespace, target.request_timeout
    try:
        if release.method.value == "blue-green":
            service_now = _read(services, release.base_name, ns, timeout)
            colour = next_colour(service_now)
            deployment, service = kubernetes_manifests(release, ns, colour=colour)
            _apply(dyn, deployments, deployment, timeout)
            state, why = _wait(deployments, deployment["metadata"]["name"], ns, release.health_deadline_s, timeout)
            if state != COMPLETE:
                raise DeployFailed(f"{release.base_name} {release.version} ({colour}) on {target.name}: {why}; "
                                   "the Service was not switched, the previous colour is serving")
            _apply(dyn, services, service, timeout)
            logger.info("%s: Service switched to %s", release.base_name, colour)
            return f"{colour} serving ({why})"
        manifests = kubernetes_manifests(release, ns)
        deployment = manifests[0]
        before = _read(deployments, deployment["metadata"]["name"], ns, timeout)
        for manifest in manifests:
            _apply(dyn, deployments if manifest["kind"] == "Deployment" else services, manifest, timeout)
        state, why = _wait(deployments, deployment["metadata"]["name"], ns, release.health_deadline_s, timeout)
        if state == COMPLETE:
            return why
        back = previous_manifest(before, deployment)
        if back is None:
            raise DeployFailed(f"{release.base_name} {release.version} on {target.name}: {why}; "
                               "there was no previous version to roll back to")
        _apply(dyn, deployments, back, timeout)
        state_back, why_back = _wait(deployments, deployment["metadata"]["name"], ns, release.health_deadline_s,
                                     timeout)
        raise DeployFailed(f"{release.base_name} {release.version} on {target.name}: {why}; rolled back to the "
                           f"previous template ({state_back}: {why_back})")
    except ApiException as exc:
        raise RemoteError(f"Kubernetes {target.name}/{ns}: {exc.status} {exc.reason}") from exc
    finally:
        api.close()
