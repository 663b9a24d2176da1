"""A tiny web application for deploy tests and benchmarks: busybox httpd images pushed to the
stack's registry, and its Application block."""

from __future__ import annotations

# What each kind of version does (the value of ``versions[version]`` in push_web_app):
#   True            httpd serving /index.html and /healthz
#   False           httpd without /healthz: never healthy
#   "exits"         exits 3 at once (a bad command, a missing file)
#   "nocmd"         no CMD at all: the engine refuses to create the container ("No command specified")
#   "needs-config"  /healthz only when $APP_MODE and $DB_PASSWORD are set and /run/secrets/api-token is not empty
_NEEDS_CONFIG = ('if [ -n "$APP_MODE" ] && [ -n "$DB_PASSWORD" ] && [ -s /run/secrets/api-token ]; then '
                 'echo ok > /www/healthz; else echo "missing configuration"; fi; '
                 'exec /bin/busybox httpd -f -p {port} -h /www')


def _dockerfile_tail(kind, port: int) -> str:
    httpd = f'CMD ["/bin/busybox", "httpd", "-f", "-p", "{port}", "-h", "/www"]\n'
    tail = "COPY www /www\nSTOPSIGNAL SIGKILL\n"
    if kind == "exits":
        return tail + 'CMD ["/bin/busybox", "sh", "-c", "echo cannot start; exit 3"]\n'
    if kind == "nocmd":
        return tail
    if kind == "needs-config":
        script = _NEEDS_CONFIG.format(port=port).replace('"', '\\"')
        return tail + f'CMD ["/bin/busybox", "sh", "-c", "{script}"]\n'
    return tail + httpd


def push_web_app(app: str, port: int, versions: dict[str, bool | str], deadline_s: float, page_prefix: str = "",
                 source: str = "test", component: dict | None = None,
                 registry_block: str = "local-registry") -> dict[str, str]:
    """Save application ``app`` (one component ``web`` on ``port``, health check ``/healthz`` within
    ``deadline_s``, plus ``component``'s fields) and push one image per version, tagged with it,
    built on the ``build-server`` engine and pushed to the registry of block ``registry_block``:
    ``/index.html`` reads ``<page_prefix><version>``; what else the version does is said by
    ``versions[version]`` (see the table above). ``STOPSIGNAL
    SIGKILL``: busybox httpd as PID 1 ignores SIGTERM, so every stop would otherwise wait Docker's
    10 s stop timeout. Returns version → digest."""
    from blocks import Application, Component, ContainerRegistry, DockerHostTarget, HealthCheck
    from tasks.images.base import prepare_busybox_context
    from tasks.images.build import build_image
    from tasks.images.push import push_image

    registry = ContainerRegistry.load(registry_block)
    builder = DockerHostTarget.load("build-server")
    repository = registry.repository(f"{app}-web")
    digests = {}
    for version, kind in versions.items():
        files = {"www/index.html": f"{page_prefix}{version}\n", **({"www/healthz": "ok\n"} if kind is True else {})}
        context = prepare_busybox_context(dockerfile_tail=_dockerfile_tail(kind, port), files=files)
        built = build_image(builder, context, repository, tags=[version], revision=version, source=source)
        digests[version] = push_image(builder, registry, built).digest
    fields = {"name": "web", "ports": [port], "health_check": HealthCheck(path="/healthz", deadline_s=deadline_s),
              **(component or {})}
    Application(name=app, repository=f"file:///nowhere/{app}.git", components=[Component(**fields)]).save(app)
    return digests
