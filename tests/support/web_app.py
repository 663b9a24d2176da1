"""A tiny web application for deploy tests and benchmarks: busybox httpd images pushed to the
stack's registry, and its Application block."""

from __future__ import annotations


def push_web_app(app: str, port: int, versions: dict[str, bool], deadline_s: float, page_prefix: str = "",
                 source: str = "test", registry_block: str = "local-registry") -> dict[str, str]:
    """Save application ``app`` (one component ``web`` on ``port``, health check ``/healthz`` within
    ``deadline_s``) and push one image per version, tagged with it, built on the ``build-server``
    engine: ``/index.html`` reads ``<page_prefix><version>``, ``/healthz`` exists only when
    ``versions[version]`` is true; the images go to the registry of block ``registry_block``.
    ``STOPSIGNAL SIGKILL``: busybox httpd as PID 1 ignores SIGTERM,
    so every stop would otherwise wait Docker's 10 s stop timeout. Returns version → digest."""
    from blocks import Application, Component, ContainerRegistry, DockerHostTarget, HealthCheck
    from tasks.images.base import prepare_busybox_context
    from tasks.images.build import build_image
    from tasks.images.push import push_image

    registry = ContainerRegistry.load(registry_block)
    builder = DockerHostTarget.load("build-server")
    repository = registry.repository(f"{app}-web")
    digests = {}
    for version, healthy in versions.items():
        files = {"www/index.html": f"{page_prefix}{version}\n", **({"www/healthz": "ok\n"} if healthy else {})}
        context = prepare_busybox_context(
            dockerfile_tail=f'COPY www /www\nSTOPSIGNAL SIGKILL\nCMD ["/bin/busybox", "httpd", "-f", "-p", "{port}", '
                            '"-h", "/www"]\n',
            files=files)
        built = build_image(builder, context, repository, tags=[version], revision=version, source=source)
        digests[version] = push_image(builder, registry, built).digest
    Application(name=app, repository=f"file:///nowhere/{app}.git",
                components=[Component(name="web", ports=[port],
                                      health_check=HealthCheck(path="/healthz", deadline_s=deadline_s))]).save(app)
    return digests
