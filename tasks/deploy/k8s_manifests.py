"""Kubernetes manifests of a release, pure: what the cluster serves it as.

Per service role: a ConfigMap (plain env) and a Secret (env files, secret files) named by a hash of
their content (immutable, so the previous pod template still finds its own after a rollback), a
Deployment (RollingUpdate with ``maxUnavailable: 0``, readiness probe, resources, progress deadline,
env/envFrom, volumes), its Service, an Ingress (host, path, TLS secret, class) and a
HorizontalPodAutoscaler (min/max, CPU target). Per batch role: a Job (run once per deploy) or a
CronJob (a schedule). Blue-green: colour-suffixed Deployments and a Service selecting one colour.

Secret data is only ever filled from :class:`tasks.deploy.runtime.RuntimeValues` at apply time;
a plan renders placeholders (:func:`redacted`). Every manifest is validated in the tests against
the official OpenAPI schemas (kubernetes-validate).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re

from blocks.application import RoleKind
from blocks.fields import path_under
from opsflow.core.errors import InvalidInput
from tasks.deploy.plan import ComponentRelease
from tasks.deploy.runtime import RuntimeValues

K8S_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
COLOUR_LABEL = "opsflow.org/colour"
HASH_ANNOTATION = "opsflow.org/config-hash"
HOLDS_ANNOTATION = "opsflow.org/holds"


def k8s_name(name: str, limit: int = 63) -> str:
    """``name`` if Kubernetes takes it as an object name (DNS-1123 label of at most ``limit``)."""
    if len(name) > limit or not K8S_NAME_RE.fullmatch(name):
        raise InvalidInput(f"{name!r} is not a Kubernetes name (lowercase letters, digits and '-', at most {limit} "
                           "characters): shorten or rename the application, component or role")
    return name


def _file_key(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", path.strip("/"))


def _hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def config_objects(release: ComponentRelease, namespace: str, values: RuntimeValues) -> list[dict]:
    """The ConfigMap (plain env) and Secrets (env files; secret files) of a release, named
    ``<base>-config-<hash>``, ``<base>-env-<hash>``, ``<base>-files-<hash>``, immutable."""
    runtime, objects = release.runtime, []
    meta_labels = {"app.kubernetes.io/name": release.base_name, "app.kubernetes.io/part-of": release.app}
    if runtime.env:
        data = dict(runtime.env)
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "immutable": True,
                        "metadata": {"name": k8s_name(f"{release.base_name}-config-{_hash(data)}"),
                                     "namespace": namespace, "labels": meta_labels},
                        "data": data})
    # Env files and secret files go to two Secrets: envFrom would turn every key of one into a variable.
    for holds, data in (("env", {k: v.get_secret_value() for k, v in values.secret_env.items()}),
                        ("files", {_file_key(path): content.get_secret_value()
                                   for path, (content, _) in values.files.items()})):
        if not data:
            continue
        digest = values.fingerprint.removeprefix("sha256:")[:10]  # what the plan shows, covers every value
        objects.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
                        "metadata": {"name": k8s_name(f"{release.base_name}-{holds}-{digest}"),
                                     "namespace": namespace, "labels": meta_labels,
                                     "annotations": {HOLDS_ANNOTATION: holds}},
                        "stringData": data})
    return objects


def pod_spec(release: ComponentRelease, config: list[dict], allowed_host_paths: list[str] | None,
             restart: str = "Always") -> dict:
    """The pod template's spec: one container with image, command/args, env from the ConfigMap and
    Secret, volumes (PVCs for named volumes, hostPath under the allowed roots, secret files),
    resources and the readiness probe; ``shareProcessNamespace`` stands for ``init`` (the pause
    container is PID 1, so the app gets default signal handling)."""
    runtime = release.runtime
    container: dict = {"name": release.component, "image": release.image,
                       "resources": {"requests": {"cpu": release.cpu, "memory": release.memory},
                                     "limits": {"cpu": release.cpu, "memory": release.memory}}}
    if runtime.command is not None:
        container["command"] = list(runtime.command)
    if runtime.args is not None:
        container["args"] = list(runtime.args)
    if release.ports and release.kind == RoleKind.service:
        container["ports"] = [{"containerPort": p} for p in release.ports]
        if release.health_path:
            container["readinessProbe"] = {"httpGet": {"path": release.health_path, "port": release.ports[0]},
                                           "periodSeconds": 2, "failureThreshold": 3,
                                           "timeoutSeconds": max(1, int(release.probe_timeout_s))}
    env_from, files_secret = [], None
    for obj in config:
        ref = {"name": obj["metadata"]["name"]}
        if obj["kind"] == "ConfigMap":
            env_from.append({"configMapRef": ref})
        elif obj["metadata"]["annotations"][HOLDS_ANNOTATION] == "env":
            env_from.append({"secretRef": ref})
        else:
            files_secret = obj["metadata"]["name"]
    volumes, mounts = _volumes(release, files_secret, allowed_host_paths)
    if env_from:
        container["envFrom"] = env_from
    if mounts:
        container["volumeMounts"] = mounts
    spec: dict = {"containers": [container], "restartPolicy": restart}
    if volumes:
        spec["volumes"] = volumes
    if runtime.init:
        spec["shareProcessNamespace"] = True
    return spec


def _volumes(release: ComponentRelease, secret_name: str | None,
             allowed_host_paths: list[str] | None) -> tuple[list, list]:
    """Pod volumes and the container's mounts: PVCs for named volumes, hostPath under the allowed
    roots, and each secret file from the release's Secret (subPath, so the directory stays as it is)."""
    runtime, volumes, mounts = release.runtime, [], []
    for i, volume in enumerate(runtime.volumes):
        name = f"vol-{i}"
        if volume.is_host_path:
            if allowed_host_paths is not None and not path_under(volume.source, allowed_host_paths):
                raise InvalidInput(f"host path {volume.source} is not under the target's allowed_host_paths "
                                   f"({', '.join(allowed_host_paths) or 'none'})")
            volumes.append({"name": name, "hostPath": {"path": volume.source, "type": "Directory"}})
        else:
            volumes.append({"name": name, "persistentVolumeClaim": {"claimName": volume.source}})
        mounts.append({"name": name, "mountPath": volume.target, "readOnly": volume.read_only})
    if runtime.secret_files:
        if secret_name is None:
            raise InvalidInput(f"{release.base_name}: the secret files' Secret was not built")
        volumes.append({"name": "secret-files", "secret": {"secretName": secret_name, "items": [
            {"key": _file_key(f.path), "path": _file_key(f.path), "mode": f.mode}
            for f in runtime.secret_files]}})
        mounts += [{"name": "secret-files", "mountPath": f.path, "subPath": _file_key(f.path), "readOnly": True}
                   for f in runtime.secret_files]
    return volumes, mounts


def _labels(release: ComponentRelease, colour: str | None) -> tuple[dict, dict]:
    selector = {"app.kubernetes.io/name": release.base_name, **({COLOUR_LABEL: colour} if colour else {})}
    labels = {**selector, "app.kubernetes.io/part-of": release.app, "app.kubernetes.io/component": release.component,
              "app.kubernetes.io/version": release.version[:63]}
    return selector, labels


def _template_meta(release: ComponentRelease, labels: dict, config: list[dict]) -> dict:
    annotations = {**release.runtime.labels, HASH_ANNOTATION: _hash({"config": [o["metadata"]["name"]
                                                                                 for o in config]})}
    return {"labels": labels, "annotations": annotations}


def kubernetes_manifests(release: ComponentRelease, namespace: str, colour: str | None = None,
                         values: RuntimeValues | None = None, allowed_host_paths: list[str] | None = None,
                         ingress_class: str | None = None) -> list[dict]:
    """Every object of ``release`` in apply order: ConfigMap/Secret, then the workload (Deployment;
    Job or CronJob for a batch role), then Service, Ingress and HorizontalPodAutoscaler.

    Blue-green: ``colour`` names the Deployment ``<base>-<colour>``; the Service selects that colour
    and the autoscaler scales it. ``values`` holds the secrets (empty: none are read). Host paths must
    be under ``allowed_host_paths`` (None: not checked here).
    """
    values = values or RuntimeValues()
    allowed = allowed_host_paths  # None: checked elsewhere (the plan renders what check_target passed)
    base = k8s_name(release.base_name, 52 if release.schedule else 63)
    config = config_objects(release, namespace, values)
    selector, labels = _labels(release, colour)
    if release.kind == RoleKind.batch:
        restart = "OnFailure" if release.runtime.restart_policy and \
            release.runtime.restart_policy.value in ("on-failure", "always") else "Never"
        job_spec = {"backoffLimit": 0 if restart == "Never" else 3,
                    "activeDeadlineSeconds": int(release.run_deadline_s), "ttlSecondsAfterFinished": 86400,
                    "template": {"metadata": _template_meta(release, labels, config),
                                 "spec": pod_spec(release, config, allowed, restart)}}
        if release.schedule:
            workload = {"apiVersion": "batch/v1", "kind": "CronJob",
                        "metadata": {"name": base, "namespace": namespace, "labels": labels},
                        "spec": {"schedule": release.schedule, "concurrencyPolicy": "Forbid",
                                 "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
                                 "jobTemplate": {"metadata": {"labels": labels}, "spec": job_spec}}}
        else:
            workload = {"apiVersion": "batch/v1", "kind": "Job",
                        "metadata": {"name": job_name(release), "namespace": namespace, "labels": labels},
                        "spec": job_spec}
        return [*config, workload]
    name = k8s_name(base + (f"-{colour}" if colour else ""))
    spec: dict = {"selector": {"matchLabels": selector}, "progressDeadlineSeconds": int(release.health_deadline_s),
                  "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                  "template": {"metadata": _template_meta(release, labels, config),
                               "spec": pod_spec(release, config, allowed)}}
    if release.autoscale is None:
        spec["replicas"] = release.replicas  # with an autoscaler the HPA owns the count
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": name, "namespace": namespace, "labels": labels}, "spec": spec}
    objects = [*config, deployment]
    if release.ports:
        objects.append({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": base, "namespace": namespace,
                                     "labels": {"app.kubernetes.io/part-of": release.app}},
                        "spec": {"selector": selector,
                                 "ports": [{"name": f"p{p}", "port": p, "targetPort": p} for p in release.ports]}})
    if release.ingress is not None:
        objects.append(ingress_manifest(release, namespace, base, ingress_class))
    if release.autoscale is not None:
        scale = release.autoscale
        objects.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                        "metadata": {"name": base, "namespace": namespace, "labels": labels},
                        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                                 "minReplicas": scale.min_replicas, "maxReplicas": scale.max_replicas,
                                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                                     "type": "Utilization", "averageUtilization": scale.cpu_percent}}}]}})
    return objects


def ingress_manifest(release: ComponentRelease, namespace: str, service: str, default_class: str | None) -> dict:
    """The Ingress routing ``host`` + ``path`` to the release's Service (TLS when a secret is named)."""
    ingress = release.ingress
    if not release.ports:
        raise InvalidInput(f"{release.base_name}: an ingress needs a port to route to")
    port = ingress.port or release.ports[0]
    if port not in release.ports:
        raise InvalidInput(f"{release.base_name}: ingress.port {port} is not one of the component's ports "
                           f"{release.ports}")
    spec: dict = {"rules": [{"host": ingress.host, "http": {"paths": [{
        "path": ingress.path, "pathType": "Prefix",
        "backend": {"service": {"name": service, "port": {"number": port}}}}]}}]}
    if ingress.ingress_class or default_class:
        spec["ingressClassName"] = ingress.ingress_class or default_class
    if ingress.tls_secret:
        spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": service, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": release.app}},
            "spec": spec}


def job_name(release: ComponentRelease) -> str:
    """A run-once Job per image: ``<base>-<digest12>`` (a Job's template cannot change)."""
    return k8s_name(f"{release.base_name}-{release.image.rsplit(':', 1)[1][:12]}")


def redacted(manifests: list[dict], values: RuntimeValues) -> list[dict]:
    """``manifests`` as a plan shows them: every Secret's data replaced by its key names and the fingerprint."""
    shown = copy.deepcopy(manifests)
    for obj in shown:
        if obj.get("kind") == "Secret":
            obj["stringData"] = {k: f"<secret {values.fingerprint}>" for k in obj.get("stringData", {})}
    return shown
