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
from blocks.application import RoleKind
from opsflow.core.errors import DeployFailed, RemoteError
from tasks.deploy.k8s_manifests import job_name, kubernetes_manifests
from tasks.deploy.plan import ComponentRelease
from tasks.deploy.runtime import RuntimeValues, load_runtime

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


def job_verdict(job: dict) -> tuple[str, str]:
    """(complete | progressing | failed, why) for a Job as the API returns it."""
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            return COMPLETE, f"completed ({status.get('succeeded', 1)} succeeded)"
        if cond.get("status") == "True" and cond.get("type") in ("Failed", "FailureTarget"):
            return FAILED, f"{cond.get('reason') or 'failed'}: {cond.get('message') or ''}".rstrip(": ")
    return PROGRESSING, f"{status.get('active', 0)} active"


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
    if "replicas" in planned["spec"] or "replicas" in current["spec"]:  # absent: an autoscaler owns the count
        back["spec"]["replicas"] = current["spec"].get("replicas", planned["spec"].get("replicas", 1))
    return back


def _resource(dyn, manifest: dict):
    return dyn.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])


def _read(resource, name: str, namespace: str, timeout: float) -> dict | None:
    from kubernetes.dynamic.exceptions import NotFoundError

    try:
        return resource.get(name=name, namespace=namespace, _request_timeout=timeout).to_dict()
    except NotFoundError:
        return None


def _apply(dyn, manifest: dict, timeout: float, dry_run: bool = False) -> dict:
    extra = {"dry_run": "All"} if dry_run else {}
    return dyn.server_side_apply(_resource(dyn, manifest), body=manifest, field_manager=FIELD_MANAGER,
                                 force_conflicts=True, _request_timeout=timeout, **extra).to_dict()


def _wait(dyn, manifest: dict, deadline_s: float, timeout: float, verdict=rollout_verdict) -> tuple[str, str]:
    resource, meta = _resource(dyn, manifest), manifest["metadata"]
    end = time.monotonic() + deadline_s + 10  # the controller marks the deadline; allow it to say so
    state = (PROGRESSING, "not read yet")
    while time.monotonic() < end:
        state = verdict(_read(resource, meta["name"], meta["namespace"], timeout) or {})
        if state[0] != PROGRESSING:
            return state
        time.sleep(1)
    return FAILED, f"not complete within {deadline_s:g}s: {state[1]}"


def dry_run_manifests(target: KubernetesTarget, manifests: list[dict]) -> list[str]:
    """Server-side dry run (``dryRun=All``) of every manifest: the cluster validates and admits them
    without storing anything. Returns ``kind/name`` of each; raises RemoteError naming the refused one."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic import DynamicClient

    api = target.get_api_client()
    try:
        dyn = DynamicClient(api)
        done = []
        for manifest in manifests:
            try:
                _apply(dyn, manifest, target.request_timeout, dry_run=True)
            except ApiException as exc:
                raise RemoteError(f"{manifest['kind']}/{manifest['metadata']['name']} refused: {exc.status} "
                                  f"{exc.reason}: {(exc.body or '')[:300]}") from None
            done.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
        return done
    finally:
        api.close()


def _rollout_batch(dyn, release: ComponentRelease, manifests: list[dict], timeout: float) -> str:
    """Apply a batch role: a CronJob is applied and done; a Job (run once per image) is replaced
    and followed to completion."""
    *config, workload = manifests
    for manifest in config:
        _apply(dyn, manifest, timeout)
    if workload["kind"] == "CronJob":
        _apply(dyn, workload, timeout)
        return f"CronJob {workload['metadata']['name']} scheduled ({release.schedule})"
    resource = _resource(dyn, workload)
    if _read(resource, job_name(release), workload["metadata"]["namespace"], timeout) is not None:
        resource.delete(name=job_name(release), namespace=workload["metadata"]["namespace"],
                        propagation_policy="Background", _request_timeout=timeout)
        _wait_gone(resource, job_name(release), workload["metadata"]["namespace"], timeout)
    _apply(dyn, workload, timeout)
    state, why = _wait(dyn, workload, release.run_deadline_s, timeout, verdict=job_verdict)
    if state != COMPLETE:
        raise DeployFailed(f"{release.base_name} {release.version}: Job {job_name(release)} {why}")
    return f"Job {job_name(release)} {why}"


def _wait_gone(resource, name: str, namespace: str, timeout: float, deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    while _read(resource, name, namespace, timeout) is not None and time.monotonic() < end:
        time.sleep(0.5)


@task(name="rollout-kubernetes", task_run_name="rollout-{release.base_name}-{target.name}")
def rollout_kubernetes(target: KubernetesTarget, release: ComponentRelease) -> str:
    """Apply the release and wait for it: ConfigMap/Secret first, then (rolling) the Deployment,
    Service, Ingress and autoscaler, or (blue-green) the other colour's Deployment and, once it is
    ready, the Service/Ingress/autoscaler switch to it; a batch role's Job runs to completion (a
    CronJob is applied). On failure the previous template (or colour) is put back and it raises."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic import DynamicClient

    logger = get_run_logger()
    values: RuntimeValues = load_runtime(release.runtime, f"components[{release.key}].runtime")
    api = target.get_api_client()
    ns, timeout = target.namespace, target.request_timeout
    build = {"values": values, "allowed_host_paths": target.allowed_host_paths, "ingress_class": target.ingress_class}
    try:
        dyn = DynamicClient(api)
        if release.kind == RoleKind.batch:
            return _rollout_batch(dyn, release, kubernetes_manifests(release, ns, **build), timeout)
        services = dyn.resources.get(api_version="v1", kind="Service")
        if release.method.value == "blue-green":
            colour = next_colour(_read(services, release.base_name, ns, timeout))
            manifests = kubernetes_manifests(release, ns, colour=colour, **build)
            deployment = next(m for m in manifests if m["kind"] == "Deployment")
            for manifest in manifests[:manifests.index(deployment) + 1]:
                _apply(dyn, manifest, timeout)
            state, why = _wait(dyn, deployment, release.health_deadline_s, timeout)
            if state != COMPLETE:
                raise DeployFailed(f"{release.base_name} {release.version} ({colour}) on {target.name}: {why}; "
                                   "the Service was not switched, the previous colour is serving")
            for manifest in manifests[manifests.index(deployment) + 1:]:
                _apply(dyn, manifest, timeout)
            logger.info("%s: Service switched to %s", release.base_name, colour)
            return f"{colour} serving ({why})"
        manifests = kubernetes_manifests(release, ns, **build)
        deployment = next(m for m in manifests if m["kind"] == "Deployment")
        deployments = _resource(dyn, deployment)
        before = _read(deployments, deployment["metadata"]["name"], ns, timeout)
        for manifest in manifests:
            _apply(dyn, manifest, timeout)
        state, why = _wait(dyn, deployment, release.health_deadline_s, timeout)
        if state == COMPLETE:
            return why if release.replicas else f"scaled to 0 ({why})"
        back = previous_manifest(before, deployment)
        if back is None:
            raise DeployFailed(f"{release.base_name} {release.version} on {target.name}: {why}; "
                               "there was no previous version to roll back to")
        _apply(dyn, back, timeout)
        state_back, why_back = _wait(dyn, deployment, release.health_deadline_s, timeout)
        raise DeployFailed(f"{release.base_name} {release.version} on {target.name}: {why}; rolled back to the "
                           f"previous template ({state_back}: {why_back})")
    except ApiException as exc:
        raise RemoteError(f"Kubernetes {target.name}/{ns}: {exc.status} {exc.reason}") from exc
    finally:
        api.close()
