"""Smoke flow: build a small image with the build server's engine and push it to the registry."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from blocks import ContainerRegistry, DockerHostTarget, names
from blocks.fields import BlockName
from tasks.images.base import prepare_busybox_context
from tasks.images.build import build_image
from tasks.images.push import push_image
from tasks.workspace import cleanup_workspace

RESULT_ARTIFACT_KEY = "smoke-image-result"


@flow(name="smoke-image", flow_run_name="smoke-image-{tag}", log_prints=True)
def smoke_image(
    tag: str = "demo",
    repository: str = "opsflow/smoke",
    engine_block: BlockName = names.BUILD_ENGINE,
    registry_block: BlockName = names.REGISTRY,
) -> dict:
    """Build ``repository:tag`` from a busybox-on-scratch context, push it, report the digest.

    Args:
        tag: image tag to push (never only ``latest``).
        repository: repository name inside the registry.
        engine_block: name of the DockerHostTarget block of the build server's engine.
        registry_block: name of the ContainerRegistry block to push to.
    Returns:
        ``{"repository", "tags", "digest", "ref"}`` of the pushed image.
    """
    engine = DockerHostTarget.load(engine_block)
    registry = ContainerRegistry.load(registry_block)
    greeting = f"hello from opsflow smoke image {tag}"
    context = prepare_busybox_context(
        dockerfile_tail='COPY greeting.txt /greeting.txt\nCMD ["/bin/cat", "/greeting.txt"]\n',
        files={"greeting.txt": greeting + "\n"},
    )
    built = build_image(engine, context, registry.repository(repository), tags=[tag],
                        revision="smoke", source="opsflow:flows/smoke.py")
    pushed = push_image(engine, registry, built)
    cleanup_workspace([context])
    result = {"repository": pushed.repository, "tags": pushed.tags, "digest": pushed.digest, "ref": pushed.ref}
    create_table_artifact(key=RESULT_ARTIFACT_KEY, table=[result], description="Image pushed by the smoke flow")
    create_markdown_artifact(
        markdown=f"# Smoke image pushed\n\n| image | digest |\n|---|---|\n"
                 f"| `{pushed.repository}:{tag}` | `{pushed.digest}` |\n",
        description="smoke-image summary",
    )
    return result
