"""Harbor's own API (``/api/v2.0``), for what the v2 API will not tell a robot account: its repositories.

Documented endpoints used: ``GET /api/v2.0/projects`` and ``GET /api/v2.0/projects/{project_name}/repositories``
(both paginated with ``page``/``page_size`` and a ``Link: <…>; rel="next"`` header). Harbor takes the
account's credentials as HTTP Basic on its API.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx

from opsflow.core.errors import RegistryAuthError, RemoteError
from opsflow.registry.auth import tls_verify
from opsflow.registry.v2 import request

PAGE_SIZE = 100
MAX_PAGES = 1000


def open_harbor_client(url: str, username: str | None, password: str | None, ca_cert: str | None = None,
                       verify: bool = True, timeout: float = 30) -> httpx.Client:
    """An httpx client on ``<url>/api/v2.0`` with the account's credentials and the registry's CA."""
    auth = httpx.BasicAuth(username, password or "") if username else None
    return httpx.Client(base_url=url.rstrip("/") + "/api/v2.0", auth=auth, verify=tls_verify(ca_cert, verify),
                        timeout=timeout, headers={"Accept": "application/json"})


def _pages(client: httpx.Client, path: str) -> list[dict]:
    items: list[dict] = []
    url: str | None = f"{path}?page=1&page_size={PAGE_SIZE}"
    where = str(client.base_url).rstrip("/")
    for _ in range(MAX_PAGES):
        if url is None:
            return items
        resp = request(client, "GET", url)
        if resp.status_code in (401, 403):
            raise RegistryAuthError(f"Harbor API {where}: GET {path} answered {resp.status_code}; the block's user "
                                    "needs read access to the project (a robot account with 'list repository')")
        if resp.status_code != 200:
            raise RemoteError(f"Harbor API {where}: GET {path} answered {resp.status_code}: {resp.text[:200]}")
        page = resp.json()
        if not isinstance(page, list):
            raise RemoteError(f"Harbor API {where}: GET {path} did not answer a list; is this Harbor's API?")
        items += [item for item in page if isinstance(item, dict)]
        link = resp.links.get("next", {}).get("url")
        base = client.base_url.path.rstrip("/")
        if link and link.startswith(base + "/"):  # Harbor links carry the /api/v2.0 prefix the client adds
            link = link[len(base):]
        url = link if link and link != url else None
    raise RemoteError(f"Harbor API {where}: GET {path} returned more than {MAX_PAGES} pages")


def list_projects(client: httpx.Client) -> list[str]:
    """The names of the projects the account can see."""
    return sorted(str(p["name"]) for p in _pages(client, "/projects") if p.get("name"))


def list_project_repositories(client: httpx.Client, project: str) -> list[str]:
    """The repositories of ``project``, as the v2 API names them (``project/name``)."""
    return sorted(str(r["name"]) for r in _pages(client, f"/projects/{quote(project, safe='')}/repositories")
                  if r.get("name"))
