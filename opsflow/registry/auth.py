"""Logging in to a registry as ``docker login`` does: HTTP Basic, or the Docker token flow; and TLS with a private CA.

The token flow (https://distribution.github.io/distribution/spec/auth/token/, used by Harbor, GitLab's
registry, GHCR, distribution with ``auth: token``): a request answered ``401`` with
``WWW-Authenticate: Bearer realm="…",service="…",scope="…"`` is sent again with a token the realm
issues for that service and scope (``GET realm?service=…&scope=…`` with the block's credentials as
Basic auth, or anonymously without them). Tokens are cached per scope until shortly before they
expire (``expires_in``, 60 s when absent, as the spec says) and fetched again when the registry
answers 401 to a cached one. A registry that challenges ``Basic`` gets the credentials on every
request from then on.

The credentials travel in the ``Authorization`` header only; no error message carries them.

Why not a library for the v2 transport: oras-py and python-dxf (both on PyPI) are built on ``requests``,
while opsflow's other HTTP calls (forges, the Prefect API, health probes) are httpx, with one
timeout/retry-within-deadline policy (``opsflow.core.waits``) and one CA bundle per client; neither speaks
Harbor's project API (cleanup's inventory when the catalog is refused), and the docker SDK's
``RegistryData`` only reads a manifest through the engine. The token flow itself is this module's one
``httpx.Auth`` class.
"""

from __future__ import annotations

import base64
import re
import ssl
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from opsflow.core import tls
from opsflow.core.errors import RegistryAuthError, RemoteError

_PARAM = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^\s,]+)')
_NAME = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_REPO_PATH = re.compile(rf"^/v2/({_NAME})/(?:manifests|blobs|tags|referrers)(?:/|$)")
DEFAULT_TOKEN_TTL_S = 60.0  # the spec's default when the token service gives no expires_in
CA_SETTING = "ca_cert"  # the ContainerRegistry block field errors point at


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str  # lower case: "bearer" or "basic"
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """``Bearer realm="https://auth/token",service="registry",scope="repository:a/b:pull"`` → Challenge."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params = {}
    for quoted_key, quoted, bare_key, bare in _PARAM.findall(rest):
        params[(quoted_key or bare_key).lower()] = quoted if quoted_key else bare
    return Challenge(scheme.lower(), params)


def scope_for(method: str, path: str) -> str | None:
    """The token scope a request needs, as distribution names it (the cache key between challenges)."""
    if path.startswith("/v2/_catalog"):
        return "registry:catalog:*"
    match = _REPO_PATH.match(path)
    if not match:
        return None
    action = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(method.upper(), "pull,push")
    return f"repository:{match.group(1)}:{action}"


def tls_verify(ca_cert: str | None, verify: bool = True) -> ssl.SSLContext | bool:
    """What httpx verifies the registry's certificate with: the system's CAs plus ``ca_cert`` (PEM), or
    the system's alone. ``verify=False`` is honoured only when no CA is given. Each context is built once
    per process (opsflow.core.tls)."""
    if not ca_cert:
        return tls.default_context() if verify else False
    return tls.context_with_ca(ca_cert)


def describe_tls_failure(url: str, exc: BaseException) -> str | None:
    """A message naming the CA setting when ``exc`` is a failed certificate verification, else None."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" not in text and "certificate verify failed" not in text:
        return None
    reason = text.split("certificate verify failed:", 1)[-1].split("(_ssl", maxsplit=1)[0].strip(" :)")
    return (f"registry {url}: its TLS certificate is not trusted ({reason or 'certificate verify failed'}); "
            f"set {CA_SETTING} on the ContainerRegistry block to the PEM of the CA that signed it "
            "(never turn verification off)")


class RegistryAuth(httpx.Auth):
    """httpx auth for a registry: Basic or the Docker token flow, with a token cache shared by threads."""

    requires_response_body = True  # the token service's answer is JSON

    def __init__(self, registry_url: str, username: str | None, password: str | None):
        self.registry_url = registry_url
        self.username = username or None
        self._password = password if username else None
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._basic = False  # the registry asked for Basic: send it on every request

    # -- the flow --------------------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        scope = scope_for(request.method, request.url.path)
        token = self._cached(scope)
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        elif self._basic and self.username:
            request.headers["Authorization"] = self._basic_header()
        response = yield request
        if response.status_code != 401:
            return
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            return
        if challenge.scheme == "basic":
            if not self.username:
                raise RegistryAuthError(f"registry {self.registry_url} asks for a login (HTTP Basic); set username "
                                        "and password on the ContainerRegistry block")
            if "Authorization" in request.headers and request.headers["Authorization"].startswith("Basic "):
                raise self._refused(response, "")
            self._basic = True
            request.headers["Authorization"] = self._basic_header()
            retried = yield request
            if retried.status_code == 401:
                raise self._refused(retried, "")
            return
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            return
        wanted = challenge.params.get("scope") or scope
        token_request = self._token_request(challenge, wanted)
        token_response = yield token_request
        token = self._accept_token(token_response, challenge, scope or wanted)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    # -- helpers ---------------------------------------------------------------------------------

    def _basic_header(self) -> str:
        raw = f"{self.username}:{self._password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _cached(self, scope: str | None) -> str | None:
        if scope is None:
            return None
        with self._lock:
            found = self._tokens.get(scope)
            if found and found[1] > time.monotonic():
                return found[0]
            self._tokens.pop(scope, None)
            return None

    def _token_request(self, challenge: Challenge, scope: str | None) -> httpx.Request:
        realm = challenge.params["realm"]
        if urlsplit(realm).scheme not in ("https", "http"):
            raise RegistryAuthError(f"registry {self.registry_url}: token realm {realm!r} is not an http(s) URL")
        if urlsplit(realm).scheme == "http" and urlsplit(self.registry_url).scheme == "https" and self.username:
            raise RegistryAuthError(f"registry {self.registry_url}: refusing to send user {self.username!r}'s "
                                    f"password to the token service {realm} over plain HTTP")
        params: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        for one in (scope or "").split():
            params.append(("scope", one))
        if self.username:
            params.append(("account", self.username))
        headers = {"Authorization": self._basic_header()} if self.username else {}
        return httpx.Request("GET", realm, params=params, headers=headers)

    def _accept_token(self, response: httpx.Response, challenge: Challenge, cache_as: str | None) -> str:
        realm = challenge.params["realm"]
        if response.status_code in (401, 403):
            raise self._refused(response, f" by its token service {realm}")
        if response.status_code != 200:
            raise RemoteError(f"registry {self.registry_url}: token service {realm} answered "
                              f"{response.status_code}; try again later")
        try:
            data = response.json()
        except ValueError:
            data = None
        token = (data or {}).get("token") or (data or {}).get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise RemoteError(f"registry {self.registry_url}: token service {realm} answered without a token")
        try:
            ttl = float(data.get("expires_in") or DEFAULT_TOKEN_TTL_S)
        except (TypeError, ValueError):
            ttl = DEFAULT_TOKEN_TTL_S
        if cache_as:
            with self._lock:  # a margin, so a token is not sent in its last seconds
                self._tokens[cache_as] = (token, time.monotonic() + max(ttl - max(5.0, ttl * 0.1), 0))
        return token

    def _refused(self, response: httpx.Response, where: str) -> RegistryAuthError:
        who = f"user {self.username!r}" if self.username else "an anonymous client"
        return RegistryAuthError(
            f"registry {self.registry_url}: the credentials of {who} were refused{where} "
            f"(HTTP {response.status_code}); check username and password on the ContainerRegistry block")
