"""The HTTP side of the receiver: routes, status codes, body limits, and the order record → run → 202.

Served by uvicorn with a Starlette app (``opsflow/webhook/http.py`` for the header deadline and the
connection limit). The delivery logic (``Receiver.handle``) is plain synchronous code, run in a bounded
pool of threads, because the journal and the Prefect client it calls block.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from blocks.names import DEFAULT_DEPLOYMENT
from opsflow.core.errors import InvalidDelivery, RemoteError
from opsflow.webhook.dispatch import Dispatcher
from opsflow.webhook.journal import Journal
from opsflow.webhook.payloads import Ignored, parse
from opsflow.webhook.routing import AppIndex, route
from opsflow.webhook.signatures import KINDS, verify

log = logging.getLogger("opsflow.webhook")
DEFAULT_MAX_BODY = 1 << 20
# How long a delivery waits for its run to be created before it is answered without the run id.
DEFAULT_ANSWER_WITHIN_S = 0.08
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 1000
HANDLER_THREADS = 64
STATUS_SIGNATURE_HEADER = "x-opsflow-signature-256"
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


def status_signature(secret: str, delivery: str) -> str:
    """What ``GET /hooks/<forge>/deliveries/<id>`` must carry in ``X-Opsflow-Signature-256``:
    ``sha256=`` and the hex HMAC-SHA256 of the delivery id with the webhook secret (the secret itself never
    travels)."""
    return "sha256=" + hmac.new(secret.encode(), delivery.encode(), hashlib.sha256).hexdigest()


@dataclass
class Receiver:
    """Everything a request needs: the forge block's kind and secret, the journal, the dispatcher."""

    forge_block: str
    kind: str
    secret: str
    journal: Journal
    dispatcher: Dispatcher
    apps: AppIndex
    max_body: int = DEFAULT_MAX_BODY
    deployment: str = DEFAULT_DEPLOYMENT
    answer_within_s: float = DEFAULT_ANSWER_WITHIN_S

    @property
    def hook_path(self) -> str:
        return f"/hooks/{self.kind}"

    def check_head(self, headers: dict[str, str]) -> tuple[int, dict] | None:
        """The answer to a POST that is refused before its body is read (length missing or too large)."""
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            return 411, {"error": "Content-Length is required"}
        if length > self.max_body or length < 0:
            return 413, {"error": f"body over the {self.max_body} byte limit"}
        return None

    def handle(self, path: str, headers: dict[str, str], read_body) -> tuple[int, dict | None]:  # noqa: PLR0911 - one return per answer
        """(status, JSON answer) for one POST; ``read_body(n)`` reads at most n bytes."""
        kind = path.rstrip("/").rsplit("/", 1)[-1] if path.startswith("/hooks/") else ""
        if kind not in KINDS or kind != self.kind:
            return 404, {"error": f"no receiver at {path}; this one serves /hooks/{self.kind}"}
        refused = self.check_head(headers)
        if refused:
            return refused
        body = read_body(int(headers["content-length"]))
        if not verify(kind, headers, body, self.secret):
            return 401, {"error": "bad or missing signature"}
        try:
            parsed = parse(kind, headers, body)
        except InvalidDelivery as exc:
            return 400, {"error": str(exc)}
        if isinstance(parsed, Ignored):
            log.info("ignored %s delivery: %s", kind, parsed.reason)
            return 204, None
        try:
            app = self.apps.get(parsed.repo)
        except RemoteError as exc:
            return 503, {"error": str(exc), "delivery": parsed.delivery}
        target = route(parsed, app, self.forge_block, self.deployment)
        if isinstance(target, Ignored):
            log.info("ignored %s delivery %s: %s", kind, parsed.delivery, target.reason)
            return 204, None
        entry = self.journal.record(kind, parsed.delivery, parsed.event, target.deployment, target.parameters,
                                    target.idempotency_key)
        # Recorded, so accepted: the answer waits a bounded time for the run id, never for a slow or
        # unreachable Prefect API (the run is then created in the background, also after a restart).
        run_id = self.dispatcher.dispatch_within(entry, ["webhook", kind, parsed.event.replace(" ", "-").lower()],
                                                 self.answer_within_s)
        log.info("%s delivery %s (%s %s@%s) → %s run %s", kind, parsed.delivery, parsed.event, parsed.repo,
                 parsed.sha[:12], target.deployment, run_id or "(being created)")
        return 202, {"flow_run_id": run_id, "status": "started" if run_id else "queued",
                     "deployment": target.deployment, "delivery": parsed.delivery}

    def status(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        """``GET /hooks/<kind>/deliveries/<id>``: what became of a delivery (its run id once created).

        Authenticated: ``X-Opsflow-Signature-256`` must be :func:`status_signature` of the delivery id.
        """
        delivery = path.rstrip("/").rsplit("/", 1)[-1]
        if not _DELIVERY_ID.fullmatch(delivery):
            return 400, {"error": "malformed delivery id"}
        given = (headers or {}).get(STATUS_SIGNATURE_HEADER, "")
        if not hmac.compare_digest(given.encode(), status_signature(self.secret, delivery).encode()):
            return 401, {"error": f"sign the request: {STATUS_SIGNATURE_HEADER}: sha256=<hex HMAC-SHA256 of the "
                                  "delivery id with the webhook secret>"}
        entry = self.journal.get(self.kind, delivery)
        if entry is None:
            return 404, {"error": f"no accepted {self.kind} delivery {delivery}"}
        return 200, {"delivery": entry.delivery, "deployment": entry.deployment, "flow_run_id": entry.flow_run_id,
                     "status": "started" if entry.flow_run_id else "queued", "attempts": entry.attempts}


def route_request(receiver: Receiver, method: str, path: str, raw_path: bytes) -> str | tuple[int, dict]:
    """Which handler a request goes to (``"post"``, ``"status"``, ``"health"``), or the refusal. Paths match
    exactly: no dot segments, no percent-escapes, nothing a proxy and this server could read differently."""
    if raw_path.decode("latin-1") != path or "//" in path or any(seg in (".", "..") for seg in path.split("/")):
        return 400, {"error": "malformed request path"}
    if path in ("/", "/healthz"):
        return "health" if method in ("GET", "HEAD") else (405, {"error": "use GET"})
    if path.rstrip("/") == receiver.hook_path:
        return "post" if method == "POST" else (405, {"error": f"deliveries are POSTed to {receiver.hook_path}"})
    if path.startswith(f"{receiver.hook_path}/deliveries/") and path.count("/") == 4:
        return "status" if method == "GET" else (405, {"error": "use GET"})
    if path.startswith("/hooks/") and path.count("/") == 2:
        return 404, {"error": f"no receiver at {path}; this one serves {receiver.hook_path}"}
    return 405 if method != "GET" else 404, {"error": f"deliveries are POSTed to {receiver.hook_path}"}


def build_app(receiver: Receiver, body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S, threads: int = HANDLER_THREADS):
    """The Starlette app: one catch-all route, so every path is judged by :func:`route_request`."""
    import anyio
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    limiter = anyio.CapacityLimiter(threads)

    def answer(status: int, payload: dict | None, close: bool = False) -> Response:
        headers = {"Connection": "close"} if close else None
        if payload is None:
            return Response(status_code=status, headers=headers)
        return JSONResponse(payload, status_code=status, headers=headers)

    async def endpoint(request: Request) -> Response:  # noqa: PLR0911 - one return per answer
        scope = request.scope
        chosen = route_request(receiver, request.method, scope["path"], scope.get("raw_path") or b"")
        if isinstance(chosen, tuple):
            return answer(*chosen, close=chosen[0] == 400)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if chosen == "health":
            return answer(200, {"status": "ok", "forge": receiver.kind})
        if chosen == "status":
            return answer(*await anyio.to_thread.run_sync(receiver.status, scope["path"], headers, limiter=limiter))
        refused = receiver.check_head(headers)
        if refused:  # the body was not read: the connection cannot be reused
            return answer(*refused, close=True)
        try:
            body = await asyncio.wait_for(request.body(), body_timeout_s)
        except TimeoutError:
            log.info("closed a connection from %s: the body did not arrive within %.0f s",
                     request.client.host if request.client else "?", body_timeout_s)
            return answer(408, {"error": f"the body did not arrive within {body_timeout_s:g} s"}, close=True)
        except ClientDisconnect:
            return answer(400, {"error": "the client went away"}, close=True)
        try:
            status, payload = await anyio.to_thread.run_sync(receiver.handle, scope["path"], headers,
                                                             lambda _n: body, limiter=limiter)
        except Exception:
            log.exception("delivery failed")
            status, payload = 500, {"error": "internal error; see the receiver's log"}
        return answer(status, payload, close=status >= 400 and status not in (401, 404, 405))

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])


def serve(forge_block: str, host: str = "127.0.0.1", port: int = 4300, journal: Path | None = None,
          max_body: int = DEFAULT_MAX_BODY, deployment: str = DEFAULT_DEPLOYMENT,
          answer_within_s: float = DEFAULT_ANSWER_WITHIN_S, header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
          body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S, max_connections: int = DEFAULT_MAX_CONNECTIONS,
          tls_cert: Path | None = None, tls_key: Path | None = None) -> None:
    """Run the receiver until SIGTERM/SIGINT (uvicorn's graceful shutdown, then the dispatcher's)."""
    import uvicorn

    from blocks import GitForge
    from opsflow.core.errors import InvalidInput
    from opsflow.webhook.http import guarded_protocol

    if bool(tls_cert) != bool(tls_key):
        raise InvalidInput("--tls-cert and --tls-key go together: the certificate (chain) and its private key")
    for given in (tls_cert, tls_key):
        if given and not Path(given).is_file():
            raise InvalidInput(f"TLS file {given} does not exist")
    forge = GitForge.load(forge_block)
    if forge.webhook_secret is None:
        raise InvalidInput(f"GitForge block {forge_block!r} has no webhook_secret; set one to verify deliveries")
    store = Journal(journal or Path(".opsflow") / "webhook" / "deliveries.sqlite3")
    dispatcher = Dispatcher(store)
    receiver = Receiver(forge_block=forge_block, kind=forge.kind.value, secret=forge.webhook_secret.get_secret_value(),
                        journal=store, dispatcher=dispatcher, apps=AppIndex(), max_body=max_body, deployment=deployment,
                        answer_within_s=answer_within_s)
    config = uvicorn.Config(
        build_app(receiver, body_timeout_s), host=host, port=port, http=guarded_protocol(header_timeout_s),
        limit_concurrency=max_connections, timeout_keep_alive=5, backlog=max(2048, max_connections),
        ssl_certfile=str(tls_cert) if tls_cert else None, ssl_keyfile=str(tls_key) if tls_key else None,
        access_log=False, log_config=None, lifespan="off", timeout_graceful_shutdown=10,
        h11_max_incomplete_event_size=64 * 1024)
    receiver.apps.get("")  # load the applications now, while we know the API answers
    dispatcher.start()
    scheme = "https" if tls_cert else "http"
    log.info("receiving %s deliveries on %s://%s:%d/hooks/%s", receiver.kind, scheme, host, port, receiver.kind)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again into the handlers it found:
    # these, so the process goes on to stop the dispatcher and close the journal, and exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: log.info("signal %d: stopped serving", signum))
    try:
        uvicorn.Server(config).run()
    finally:
        dispatcher.stop()
        store.close()
