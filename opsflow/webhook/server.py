"""The HTTP side of the receiver: status codes, body limits, and the order record → run → 202."""

from __future__ import annotations

import json
import logging
import signal
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from blocks.names import DEFAULT_DEPLOYMENT
from opsflow.core.errors import InvalidDelivery, RemoteError
from opsflow.core.threads import start_thread
from opsflow.webhook.dispatch import Dispatcher
from opsflow.webhook.journal import Journal
from opsflow.webhook.payloads import Ignored, parse
from opsflow.webhook.routing import AppIndex, route
from opsflow.webhook.signatures import KINDS, verify

log = logging.getLogger("opsflow.webhook")
DEFAULT_MAX_BODY = 1 << 20
# How long a delivery waits for its run to be created before it is answered without the run id.
DEFAULT_ANSWER_WITHIN_S = 0.08


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

    def handle(self, path: str, headers: dict[str, str], read_body) -> tuple[int, dict | None]:  # noqa: PLR0911 - one return per answer
        """(status, JSON answer) for one POST; ``read_body(n)`` reads at most n bytes."""
        kind = path.rstrip("/").rsplit("/", 1)[-1] if path.startswith("/hooks/") else ""
        if kind not in KINDS or kind != self.kind:
            return 404, {"error": f"no receiver at {path}; this one serves /hooks/{self.kind}"}
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            return 411, {"error": "Content-Length is required"}
        if length > self.max_body or length < 0:
            return 413, {"error": f"body over the {self.max_body} byte limit"}
        body = read_body(length)
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

    def status(self, path: str) -> tuple[int, dict]:
        """``GET /hooks/<kind>/deliveries/<id>``: what became of a delivery (its run id once created)."""
        delivery = path.rstrip("/").rsplit("/", 1)[-1]
        entry = self.journal.get(self.kind, delivery)
        if entry is None:
            return 404, {"error": f"no accepted {self.kind} delivery {delivery}"}
        return 200, {"delivery": entry.delivery, "deployment": entry.deployment, "flow_run_id": entry.flow_run_id,
                     "status": "started" if entry.flow_run_id else "queued", "attempts": entry.attempts}


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "opsflow-webhook"

        def log_message(self, *args) -> None:  # access lines would carry nothing the app log lacks
            return

        def _answer(self, status: int, payload: dict | None) -> None:
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status >= 400 and status not in (401, 404, 405):
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                status, payload = receiver.handle(self.path, headers, self.rfile.read)
            except Exception:
                log.exception("delivery failed")
                status, payload = 500, {"error": "internal error; see the receiver's log"}
            if status in (411, 413):  # the body was not read: do not reuse the connection
                self.close_connection = True
            self._answer(status, payload)

        def do_GET(self) -> None:
            if self.path.startswith(f"/hooks/{receiver.kind}/deliveries/"):
                self._answer(*receiver.status(self.path))
            elif self.path in ("/", "/healthz"):
                self._answer(200, {"status": "ok", "forge": receiver.kind})
            else:
                self._answer(405, {"error": "deliveries are POSTed to /hooks/" + receiver.kind})

        do_PUT = do_DELETE = do_PATCH = lambda self: self._answer(405, {"error": "use POST"})

    return Handler


def serve(forge_block: str, host: str = "127.0.0.1", port: int = 4300, journal: Path | None = None,
          max_body: int = DEFAULT_MAX_BODY, deployment: str = DEFAULT_DEPLOYMENT,
          answer_within_s: float = DEFAULT_ANSWER_WITHIN_S) -> None:
    """Run the receiver until SIGTERM/SIGINT."""
    from blocks import GitForge
    from opsflow.core.errors import InvalidInput

    forge = GitForge.load(forge_block)
    if forge.webhook_secret is None:
        raise InvalidInput(f"GitForge block {forge_block!r} has no webhook_secret; set one to verify deliveries")
    store = Journal(journal or Path(".opsflow") / "webhook" / "deliveries.sqlite3")
    dispatcher = Dispatcher(store)
    receiver = Receiver(forge_block=forge_block, kind=forge.kind.value, secret=forge.webhook_secret.get_secret_value(),
                        journal=store, dispatcher=dispatcher, apps=AppIndex(), max_body=max_body, deployment=deployment,
                        answer_within_s=answer_within_s)
    httpd = ThreadingHTTPServer((host, port), _handler(receiver))
    httpd.daemon_threads = True
    stop = threading.Event()

    def _shutdown(*_):
        if not stop.is_set():
            stop.set()
            start_thread(httpd.shutdown, name="webhook-shutdown")

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    receiver.apps.get("")  # load the applications now, while we know the API answers
    dispatcher.start()
    log.info("receiving %s deliveries on http://%s:%d/hooks/%s", receiver.kind, host, port, receiver.kind)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
        dispatcher.stop()
        store.close()
