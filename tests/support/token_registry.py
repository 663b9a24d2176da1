"""A registry behind the Docker token flow, as Harbor, GitLab and GHCR run theirs: CNCF distribution with
``auth: token`` and a small token issuer that implements the documented spec
(https://distribution.github.io/distribution/spec/auth/token/ and ``.../jwt/``).

* ``GET /token?service=…&scope=repository:<name>:pull,push&scope=…`` with the user's Basic credentials
  answers ``{"token", "access_token", "expires_in", "issued_at"}``: a JWT (ES256) whose header carries the
  signing certificate (``x5c``), signed by the test CA that the registry's ``rootcertbundle`` holds, with
  ``iss``, ``sub``, ``aud`` (the service), ``exp``/``nbf``/``iat``, ``jti`` and the granted ``access``.
  Wrong credentials: 401. Robot accounts (``robot$…``, as Harbor names them) are never granted
  ``registry:catalog:*`` (Harbor refuses ``/v2/_catalog`` to robots); anonymous clients get no access.
* Harbor's project API, what cleanup reads when the block says ``kind: harbor``:
  ``GET /api/v2.0/projects`` and ``GET /api/v2.0/projects/{name}/repositories`` (``page``/``page_size``,
  ``Link: rel="next"``), answered from the registry's own catalog.

The registry listens on this machine's non-loopback address when it has one, so a Docker engine verifies
its certificate (the engine treats 127.0.0.0/8 as insecure and verifies nothing there): a push through the
engine only works once opsflow installed the block's CA in the engine's certs.d.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from opsflow.stack.tls import KeyPair, issue, make_ca
from tests.support.net import free_port

SERVICE = "opsflow-token-registry"
ISSUER = "opsflow-test-token-issuer"
USER, PASSWORD = "ci-builder", "ci-builder-pass-5b1e0c"
ROBOT, ROBOT_PASSWORD = "robot$cleanup", "robot-cleanup-pass-93aa1f"
TOKEN_REGISTRY_BLOCK = "token-registry"


def host_address() -> str:
    """This machine's address on its default route (not loopback), or 127.0.0.1 when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.254", 9))  # no packet is sent: this only picks the route's source address
            address = probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"
    return address if not address.startswith("127.") else "127.0.0.1"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(claims: dict, signing: KeyPair) -> str:
    """A compact JWS (ES256) with the signing certificate in ``x5c``, as distribution verifies it."""
    cert = x509.load_pem_x509_certificate(signing.cert_pem.encode())
    key = serialization.load_pem_private_key(signing.key_pem.encode(), password=None)
    header = {"typ": "JWT", "alg": "ES256",
              "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """``repository:team/app:pull,push`` → ("repository", "team/app", ["pull", "push"])."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name or not actions:
        return None
    return kind, name, [a for a in actions.split(",") if a]


@dataclass
class TokenIssuer:
    """The token service (and Harbor's project API) over HTTPS, in a thread of the test process."""

    ca: KeyPair
    users: dict[str, str]
    ttl_s: int = 300
    host: str = "127.0.0.1"
    registry_url: str = ""
    requests: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.signing = issue(self.ca, "opsflow test token signer", [], client=True)
        self.tls = issue(self.ca, self.host, sorted({self.host, "127.0.0.1", "localhost"}))
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((self.host, 0), _issuer_handler(self))
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"opsflow-issuer-{uuid.uuid4().hex[:8]}"
        cert_dir.mkdir(mode=0o700)
        self.tls.write(cert_dir / "tls.crt", cert_dir / "tls.key")
        context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
        for name in ("tls.crt", "tls.key"):
            (cert_dir / name).unlink()
        cert_dir.rmdir()
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self._server.server_address[1]}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def start(self) -> TokenIssuer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-issuer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def token_requests(self, user: str | None = None) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if user is None or r["user"] == user]

    # -- the token service ---------------------------------------------------------------------

    def user_of(self, header: str) -> tuple[str | None, bool]:
        """(user, credentials valid) of an Authorization header; (None, True) for an anonymous client."""
        if not header:
            return None, True
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, False
        expected = self.users.get(user)
        return user, expected is not None and expected == password

    def grant(self, user: str | None, scopes: list[str]) -> list[dict]:
        """What ``user`` may do: every repository action to a user, the catalog never to robots, nothing anonymously."""
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None or user is None:
                continue
            kind, name, actions = parsed
            if kind == "registry" and (name != "catalog" or user.startswith("robot$")):
                continue
            allowed = [a for a in actions if a in ("pull", "push", "delete", "*")]
            if allowed:
                access.append({"type": kind, "name": name, "actions": allowed})
        return access

    def token(self, user: str | None, service: str, scopes: list[str]) -> dict:
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user or "", "aud": service, "exp": now + self.ttl_s, "nbf": now - 5,
                  "iat": now, "jti": uuid.uuid4().hex, "access": self.grant(user, scopes)}
        with self._lock:
            self.requests.append({"user": user, "scopes": scopes, "access": claims["access"]})
        token = sign_jwt(claims, self.signing)
        return {"token": token, "access_token": token, "expires_in": self.ttl_s,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}

    # -- Harbor's project API, answered from the registry's catalog ----------------------------

    def catalog(self) -> list[str]:
        token = self.token("harbor-core", SERVICE, ["registry:catalog:*"])["token"]
        context = ssl.create_default_context(cadata=self.ca.cert_pem)
        resp = httpx.get(f"{self.registry_url}/v2/_catalog?n=1000", headers={"Authorization": f"Bearer {token}"},
                         verify=context, timeout=30)
        resp.raise_for_status()
        return resp.json().get("repositories") or []


def _issuer_handler(issuer: TokenIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _answer(self, status: int, payload, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            user, valid = issuer.user_of(self.headers.get("Authorization", ""))
            if not valid:
                self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                             {"WWW-Authenticate": 'Basic realm="opsflow-test-token-issuer"'})
                return
            if parts.path == "/token":
                self._answer(200, issuer.token(user, (query.get("service") or [SERVICE])[0], query.get("scope", [])))
                return
            if user is None:
                self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "log in"}]})
                return
            if parts.path.startswith("/api/v2.0/projects"):
                self._harbor(parts.path.removeprefix("/api/v2.0/projects").strip("/"), query)
                return
            self._answer(404, {"errors": [{"code": "NOT_FOUND", "message": parts.path}]})

        def _harbor(self, rest: str, query: dict) -> None:
            repos = issuer.catalog()
            if not rest:
                items = [{"project_id": i + 1, "name": p}
                         for i, p in enumerate(sorted({r.split("/", 1)[0] for r in repos if "/" in r}))]
            elif rest.endswith("/repositories") and rest.count("/") == 1:
                project = rest.split("/", 1)[0]
                items = [{"id": i + 1, "name": r} for i, r in enumerate(sorted(repos)) if r.startswith(project + "/")]
            else:
                self._answer(404, {"errors": [{"code": "NOT_FOUND", "message": rest}]})
                return
            page = max(int((query.get("page") or ["1"])[0]), 1)
            size = min(max(int((query.get("page_size") or ["10"])[0]), 1), 100)
            chunk = items[(page - 1) * size: page * size]
            headers = {"X-Total-Count": str(len(items))}
            if page * size < len(items):
                headers["Link"] = f'</api/v2.0/projects{"/" + rest if rest else ""}?page={page + 1}' \
                                  f'&page_size={size}>; rel="next"'
            self._answer(200, chunk, headers)

    return Handler


@dataclass
class TokenRegistry:
    """CNCF distribution with ``auth: token`` (tokens from ``issuer``), TLS from the test CA, deletes enabled."""

    root: Path
    issuer: TokenIssuer
    host: str
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> TokenRegistry:
        self.port = self.port or free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        tls = issue(self.issuer.ca, self.host, sorted({self.host, "127.0.0.1", "localhost"}))
        tls.write(self.root / "registry.crt", self.root / "registry.key")
        (self.root / "issuer-bundle.pem").write_text(self.issuer.ca.cert_pem)
        config = self.root / "config.yml"
        config.write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {self.root / "data"}
  delete:
    enabled: true
auth:
  token:
    realm: {self.issuer.realm}
    service: {SERVICE}
    issuer: {ISSUER}
    rootcertbundle: {self.root / "issuer-bundle.pem"}
http:
  addr: {self.host}:{self.port}
  tls:
    certificate: {self.root / "registry.crt"}
    key: {self.root / "registry.key"}
""")
        binary = shutil.which("registry") or shutil.which("docker-registry") or "docker-registry"
        log = open(self.root / "registry.log", "ab")
        self.process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        self.issuer.registry_url = self.url
        context = ssl.create_default_context(cadata=self.issuer.ca.cert_pem)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v2/", verify=context, timeout=2).status_code == 401:
                    return self
            except httpx.HTTPError:
                assert self.process.poll() is None, (self.root / "registry.log").read_text()[-2000:]
            time.sleep(0.1)
        raise AssertionError(f"the token registry did not come up: {(self.root / 'registry.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def block(self, user: str = USER, password: str = PASSWORD, **overrides):
        """A ContainerRegistry block for this registry and user, trusting the test CA."""
        from blocks import ContainerRegistry

        return ContainerRegistry(url=self.url, username=user, password=password, ca_cert=self.issuer.ca.cert_pem,
                                 **overrides)


def start_token_registry(root: Path) -> TokenRegistry:
    """A test CA, the issuer (loopback) and the registry (this machine's address), started."""
    ca = make_ca("opsflow test CA")
    host = host_address()
    issuer = TokenIssuer(ca, users={USER: PASSWORD, ROBOT: ROBOT_PASSWORD}).start()
    try:
        return TokenRegistry(root, issuer, host).start()
    except BaseException:
        issuer.stop()
        raise


@pytest.fixture(scope="session")
def token_registry(stack, tmp_path_factory) -> Iterator[TokenRegistry]:
    """The token-auth registry for the session; its block is saved as ``token-registry`` (user ``ci-builder``).
    The CA opsflow installs for the engine (certs.d) is removed again at the end."""
    from tasks.images.push import certs_dir

    registry = start_token_registry(tmp_path_factory.mktemp("token-registry"))
    try:
        registry.block().save(TOKEN_REGISTRY_BLOCK, overwrite=True)
        yield registry
    finally:
        registry.stop()
        registry.issuer.stop()
        shutil.rmtree(certs_dir() / registry.netloc, ignore_errors=True)
