"""Which image digests are in use: containers on Docker hosts, pods on Kubernetes, recorded deploys.

Registry cleanup excludes every digest found here. A source that cannot be read fails the
task: a cleanup that silently missed a running image could delete it.
"""

from __future__ import annotations

import re

from prefect import get_run_logger, task

from blocks import DockerHostTarget, KubernetesTarget, ObjectStore
from blocks.fields import DIGEST_RE
from opsflow.core.errors import RemoteError
from tasks.deploy.records import read_deploy_records

_DIGEST_IN = re.compile(DIGEST_RE.pattern.strip("^$"))  # a digest inside a longer reference


def digest_of(reference: str | None) -> str | None:
    """The ``sha256:…`` in an image reference or a pod's imageID (``docker-pullable://r@sha256:…``)."""
    match = _DIGEST_IN.search(reference or "")
    return match.group() if match else None


def pod_image_digests(pods: list[dict]) -> set[str]:
    """Digests of every container (init and ephemeral too) of pods as the API returns them."""
    found = set()
    for pod in pods:
        status = pod.get("status") or {}
        for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for container in status.get(key) or []:
                for ref in (container.get("imageID"), container.get("image")):
                    if digest := digest_of(ref):
                        found.add(digest)
        spec = pod.get("spec") or {}
        for key in ("containers", "initContainers"):
            for container in spec.get(key) or []:
                if digest := digest_of(container.get("image")):
                    found.add(digest)
    return found


@task(name="find-running-images", task_run_name="find-running-images-{engine.name}", retries=2, retry_delay_seconds=5)
def find_running_images(engine: DockerHostTarget) -> set[str]:
    """Registry digests of the images every container on ``engine`` uses (running or stopped:
    a stopped container may be started again)."""
    import docker.errors

    client = engine.get_client()
    digests: set[str] = set()
    try:
        image_ids = {c.attrs.get("Image") for c in client.containers.list(all=True)}
        for image_id in filter(None, image_ids):
            try:
                image = client.images.get(image_id)
            except docker.errors.ImageNotFound:
                continue
            digests.update(filter(None, (digest_of(ref) for ref in image.attrs.get("RepoDigests") or [])))
    except docker.errors.APIError as exc:
        raise RemoteError(f"Docker host {engine.name}: cannot list containers: {exc.explanation or exc}") from exc
    finally:
        client.close()
    get_run_logger().info("%s: %d image digests in use", engine.name, len(digests))
    return digests


@task(name="find-pod-images", task_run_name="find-pod-images-{cluster.name}", retries=2, retry_delay_seconds=5)
def find_pod_images(cluster: KubernetesTarget) -> set[str]:
    """Digests of the images of every pod in the cluster target's namespace."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    api = cluster.get_api_client()
    try:
        pods = k8s.CoreV1Api(api).list_namespaced_pod(cluster.namespace, _request_timeout=cluster.request_timeout)
    except ApiException as exc:
        raise RemoteError(f"Kubernetes {cluster.name}: cannot list pods in {cluster.namespace}: {exc.reason}") from exc
    finally:
        api.close()
    digests = pod_image_digests([api.sanitize_for_serialization(p) for p in pods.items])
    get_run_logger().info("%s/%s: %d image digests in use", cluster.name, cluster.namespace, len(digests))
    return digests


@task(name="find-deployed-images", task_run_name="find-deployed-images", retries=2, retry_delay_seconds=5)
def find_deployed_images(store: ObjectStore) -> set[str]:
    """Digests the manual deploy pipeline recorded as running, and their rollback targets."""
    digests: set[str] = set()
    records = read_deploy_records(store)
    for record in records:
        digests |= record.digests()
    get_run_logger().info("%d deploy records: %d digests", len(records), len(digests))
    return digests
