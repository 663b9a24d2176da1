"""Images pushed straight through the registry's v2 API (blobs + manifests): fast, and with any
creation time, shared digests and image indexes a test needs."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(http: httpx.Client, repo: str, data: bytes) -> str:
    digest = _digest(data)
    if http.head(f"/v2/{repo}/blobs/{digest}").status_code == 200:
        return digest
    start = http.post(f"/v2/{repo}/blobs/uploads/")
    assert start.status_code == 202, start.text
    location = start.headers["Location"]
    put = http.put(f"{location}{'&' if '?' in location else '?'}digest={digest}", content=data,
                   headers={"Content-Type": "application/octet-stream"})
    assert put.status_code == 201, put.text
    return digest


def put_manifest(http: httpx.Client, repo: str, ref: str, body: bytes, media_type: str = OCI_MANIFEST) -> str:
    resp = http.put(f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type})
    assert resp.status_code == 201, resp.text
    return resp.headers["Docker-Content-Digest"]


def push_image(http: httpx.Client, repo: str, tags: list[str], days_old: float, layer_bytes: int = 2048,
               layer: bytes | None = None, now: datetime | None = None, labels: dict | None = None) -> str:
    """A single-platform image created ``days_old`` days ago with one layer; tagged with every tag."""
    created = (now or datetime.now(UTC)) - timedelta(days=days_old)
    layer = layer if layer is not None else os.urandom(layer_bytes)
    layer_digest = put_blob(http, repo, layer)
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": created.isoformat(),
                         "config": {"Labels": labels or {}},
                         "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    config_digest = put_blob(http, repo, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": config_digest, "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                       "digest": layer_digest, "size": len(layer)}]}).encode()
    digest = ""
    for tag in tags:
        digest = put_manifest(http, repo, tag, manifest)
    return digest


def push_index(http: httpx.Client, repo: str, tag: str, days_old: float,
               child_tags: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """An OCI image index of two platform images; returns (index, children). The children are untagged, as
    in a real multi-arch push, unless ``child_tags`` names tags for them by architecture (amd64, arm64)."""
    children = []
    child_tags = child_tags or {}
    for arch in ("amd64", "arm64"):
        child = push_image(http, repo, [child_tags.get(arch, f"tmp-{arch}")], days_old)
        children.append(child)
    manifests = [{"mediaType": OCI_MANIFEST, "digest": d, "size": 0, "platform": {"architecture": a, "os": "linux"}}
                 for d, a in zip(children, ("amd64", "arm64"), strict=True)]
    # the sizes of the children's manifests, as the index must carry them
    for entry in manifests:
        entry["size"] = len(http.get(f"/v2/{repo}/manifests/{entry['digest']}",
                                     headers={"Accept": OCI_MANIFEST}).content)
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()
    index = put_manifest(http, repo, tag, body, OCI_INDEX)
    # the helper tags made the children pushable; drop them so the children are untagged as in a real push
    for arch in ("amd64", "arm64"):
        if arch not in child_tags:
            _drop_tag(http, repo, f"tmp-{arch}")
    return index, children


def push_signature(http: httpx.Client, repo: str, subject: str, suffix: str = "sig", days_old: float = 0) -> str:
    """A cosign-style signature of ``subject``: a small OCI manifest tagged ``sha256-<hex>.<suffix>``."""
    return push_image(http, repo, [f"sha256-{subject.removeprefix('sha256:')}.{suffix}"], days_old,
                      layer=os.urandom(64), labels={"dev.cosignproject.cosign/signature": "test"})


def _drop_tag(http: httpx.Client, repo: str, tag: str) -> None:
    """Re-point ``tag`` at a throw-away manifest and delete that one (the children stay)."""
    junk = push_image(http, repo, [tag], 0, layer=os.urandom(16))
    assert http.delete(f"/v2/{repo}/manifests/{junk}").status_code == 202


def tags(http: httpx.Client, repo: str) -> set[str]:
    resp = http.get(f"/v2/{repo}/tags/list")
    return set(resp.json().get("tags") or []) if resp.status_code == 200 else set()


def manifest_exists(http: httpx.Client, repo: str, ref: str) -> bool:
    return http.head(f"/v2/{repo}/manifests/{ref}",
                     headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}).status_code == 200
