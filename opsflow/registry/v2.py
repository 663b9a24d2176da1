"""The registry's distribution v2 HTTP API (CNCF distribution, Harbor, ...): the client and the calls opsflow makes.

``ContainerRegistry.get_client()`` builds the client (Basic or token auth: ``opsflow.registry.auth``; the
block's CA for TLS); the functions here take it and retry connection errors, 429 and 5xx with an
exponential back-off. A certificate the CA setting does not trust, and refused credentials, fail at once
with a message naming the setting to fix.

Why httpx and not a registry library: oras-py and python-dxf both speak the token flow, but both are
built on ``requests`` (a second HTTP stack beside the httpx every other opsflow client uses, with its own
timeout and retry semantics), neither is in the lock, and neither covers what cleanup needs beside the
plain v2 calls (OCI indexes as units, the referrers API, the placeholder untag, Harbor's project API).
The Docker SDK's registry data goes through an engine and cannot list, tag or delete. The token flow is
one ``httpx.Auth`` (``opsflow/registry/auth.py``, ~150 lines), so httpx stays.
"""

from __future__ import annotations

import hashlib
import time

import httpx

from opsflow.core.errors import CatalogRefused, DeletesDisabled, RegistryTlsError, RemoteError, RemoteUnavailable
from opsflow.registry.auth import RegistryAuth, describe_tls_failure, tls_verify

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
RETRY_STATUS = {429, 500, 502, 503, 504}


def open_client(url: str, username: str | None = None, password: str | None = None, verify: bool = True,
                timeout: float = 30, ca_cert: str | None = None) -> httpx.Client:
    """An httpx client on the registry's API: Basic or token auth with the credentials, TLS verified with
    the system's CAs plus ``ca_cert`` (PEM)."""
    return httpx.Client(base_url=url, auth=RegistryAuth(url, username, password), verify=tls_verify(ca_cert, verify),
                        timeout=timeout, headers={"Accept": MANIFEST_TYPES})


def repository_path(host: str, repository: str) -> str:
    """``host/ns/name`` → ``ns/name`` (the path the v2 API uses)."""
    prefix = f"{host}/"
    return repository.removeprefix(prefix)


def image_name(repository: str) -> str:
    """``127.0.0.1:5000/team/app`` → ``team/app``: the repository without its registry host (for run names)."""
    host, _, rest = repository.partition("/")
    return rest if rest and ("." in host or ":" in host or host == "localhost") else repository


def request(client: httpx.Client, method: str, path: str, attempts: int = 4, **kwargs) -> httpx.Response:
    """One API call with retries on connection errors, 429 and 5xx (exponential back-off).

    Raises:
        RegistryTlsError: the certificate is not trusted (not retried: the CA setting must change).
        RegistryAuthError: the credentials were refused (not retried).
        RemoteError: still failing after ``attempts``.
    """
    last: Exception | str = ""
    for attempt in range(attempts):
        try:
            resp = client.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            tls = describe_tls_failure(str(client.base_url).rstrip("/"), exc)
            if tls:
                raise RegistryTlsError(tls) from None
            last = exc
        except httpx.HTTPError as exc:
            last = exc
        else:
            if resp.status_code not in RETRY_STATUS:
                return resp
            last = f"HTTP {resp.status_code}"
        time.sleep(min(0.2 * 2 ** attempt, 5))
    raise RemoteUnavailable(f"registry {str(client.base_url).rstrip('/')}: {method} {path} failed after {attempts} "
                      f"attempts: {last}")


def _paged(client: httpx.Client, path: str, key: str) -> list[str]:
    """Follow the v2 API's ``Link: <...>; rel="next"`` pagination."""
    items: list[str] = []
    url: str | None = path
    while url:
        resp = request(client, "GET", url)
        if resp.status_code == 404:
            return items
        if resp.status_code in (401, 403):
            where = str(client.base_url).rstrip("/")
            if url.startswith("/v2/_catalog"):
                raise CatalogRefused(f"registry {where} refuses to list its repositories to this user "
                                     f"(GET /v2/_catalog answered {resp.status_code})")
            raise RemoteError(f"registry {where}: GET {url} answered {resp.status_code}; the block's user may not "
                              "read this repository")
        if resp.status_code != 200:
            raise RemoteError(f"registry: GET {url} answered {resp.status_code}: {resp.text[:200]}")
        items += resp.json().get(key) or []
        link = resp.links.get("next", {}).get("url")
        url = link if link and link != url else None
    return items


def list_repositories(client: httpx.Client) -> list[str]:
    """Every repository of the registry's catalog.

    Raises:
        CatalogRefused: the registry does not list its catalog to this user (401/403, e.g. a Harbor robot).
    """
    return _paged(client, "/v2/_catalog?n=1000", "repositories")


def list_tags(client: httpx.Client, repository: str) -> list[str]:
    return _paged(client, f"/v2/{repository}/tags/list?n=1000", "tags")


def get_manifest(client: httpx.Client, repository: str, reference: str) -> tuple[str, str, dict]:
    resp = request(client, "GET", f"/v2/{repository}/manifests/{reference}")
    if resp.status_code != 200:
        raise RemoteError(f"registry: manifest {repository}:{reference} answered {resp.status_code}")
    digest = resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(resp.content).hexdigest()
    return digest, resp.headers.get("Content-Type", ""), resp.json()


def delete_manifest(client: httpx.Client, repository: str, digest: str) -> bool:
    """DELETE by digest; True when deleted, False when it was already gone."""
    resp = request(client, "DELETE", f"/v2/{repository}/manifests/{digest}")
    if resp.status_code in (200, 202):
        return True
    if resp.status_code == 404:
        return False
    if resp.status_code == 405:
        raise DeletesDisabled(f"registry refuses deletes ({resp.status_code} {resp.text[:120].strip()}): enable them "
                              "with storage.delete.enabled: true (REGISTRY_STORAGE_DELETE_ENABLED=true)")
    raise RemoteError(f"registry: DELETE {repository}@{digest} answered {resp.status_code}: {resp.text[:200]}")


def upload_blob(client: httpx.Client, repository: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if request(client, "HEAD", f"/v2/{repository}/blobs/{digest}").status_code == 200:
        return digest
    start = request(client, "POST", f"/v2/{repository}/blobs/uploads/")
    if start.status_code != 202:
        raise RemoteError(f"registry: blob upload to {repository} answered {start.status_code}")
    location = start.headers["Location"]
    sep = "&" if "?" in location else "?"
    put = request(client, "PUT", f"{location}{sep}digest={digest}", content=data,
                   headers={"Content-Type": "application/octet-stream"})
    if put.status_code != 201:
        raise RemoteError(f"registry: blob upload to {repository} answered {put.status_code}")
    return digest
