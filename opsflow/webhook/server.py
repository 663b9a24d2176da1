"""The HTTP side of the receiver: status codes, body limits, and the order record → run → 202.

A ``ThreadingHTTPServer`` (stdlib): one thread per connection, Nagle off (an answer is two small
writes; with Nagle the second waits for the client's delayed ACK, ~40 ms), a 30 s socket timeout
against clients that stall, and a graceful SIGTERM (stop accepting, finish the requests under way).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from opsflow.errors import InvalidInput, RemoteError
from opsflow.webhook.dispatch import Dispatcher
from opsflow.webhook.journal import Entry, Journal
from opsflow.webhook.payloads import Ignored, Invalid, parse
from opsflow.webhook.routing import DEFAULT_DEPLOYMENT, PIPELINES, AppIndex, load_applications, route
from opsflow.webhook.signatures import KINDS, verify

log = logging.getLogger("opsflow.webhook")
DEFAULT_MAX_BODY = 1 << 20
DEFAULT_ANSWER_WITHIN_S = 0.075
SHUTDOWN_GRACE_S = 10.0


class BodyIncomplete(Exception):
    """The client sent less than its Content-Length (or stalled)."""


@dataclass
class Receiver:
    """Everything a request needs: the forge block's kind and secret, the journal, the dispatcher.

    ``answer_within_s`` bounds how long a delivery waits for its run: past it the answer is a 202
    without ``flow_run_id`` (the delivery is recorded and its run is being created), so a slow
    Prefect database never makes the forge time out, while an API known to be down gets a 503.
    """

    forge_block: str
    kind: str
    secret: str = field(repr=False)
    journal: Journal
    dispatcher: Dispatcher
    apps: AppIndex
    max_body: int = DEFAULT_MAX_BODY
    deployment: str = DEFAULT_DEPLOYMENT
    answer_within_s: float = DEFAULT_ANSWER_WITHIN_S

    def handle(self, path: str, headers: dict[str, str], read_body, started: float | None = None
               ) -> tuple[int, dict | None]:
        """(status, JSON answer) for one POST; headers keyed in lower case; ``read_body(n)`` reads n bytes."""
        started = time.monotonic() if started is None else started
        path = urlsplit(path).path
        kind = path.rstrip("/").rsplit("/", 1)[-1] if path.startswith("/hooks/") else ""
        if kind not in KINDS or kind != self.kind or path.rstrip("/") != f"/hooks/{kind}":
            return 404, {"error": f"no receiver at {path}; this one serves /hooks/{self.kind}"}
        if "chunked" in headers.get("transfer-encoding", "").lower() or "content-length" not in headers:
            return 411, {"error": "Content-Length is required"}
        try:
            length = int(headers["content-length"])
        except ValueError:
            return 400, {"error": "malformed header Content-Length"}
        if length < 0:
            return 400, {"error": "malformed header Content-Length"}
        if length > self.max_body:
            return 413, {"error": f"body over the {self.max_body} byte limit"}
        try:
            body = read_body(length)
        except BodyIncomplete:
            return 400, {"error": "the body is shorter than Content-Length"}
        if not verify(kind, headers, body, self.secret):
            return 401, {"error": "bad or missing signature"}
        try:
            parsed = parse(kind, headers, body)
        except Invalid as exc:
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
        entry = self.journal.record(Entry(kind, parsed.delivery, parsed.event, parsed.repo, target.deployment,
                                          target.parameters, target.idempotency_key))
        answer = {"flow_run_id": entry.flow_run_id, "deployment": entry.deployment, "delivery": entry.delivery}
        if entry.flow_run_id:  # a redelivery of a delivery whose run exists
            return 202, answer
        future = self.dispatcher.submit(entry)
        try:
            answer["flow_run_id"] = future.result(timeout=max(0.0, started + self.answer_within_s - time.monotonic()))
        except FutureTimeout:
            if self.dispatcher.api_down:
                return 503, {"error": "the Prefect API is not answering; the delivery is recorded and will be "
                                      "started when it does", "delivery": entry.delivery}
            log.info("%s delivery %s (%s %s@%s) recorded; its %s run is still being created", kind,
                     entry.delivery, parsed.event, parsed.repo, parsed.sha[:12], entry.deployment)
            return 202, {**answer, "status": "recorded; the run is being created, a redelivery answers with its id"}
        except RemoteError as exc:
            return 503, {"error": str(exc), "delivery": entry.delivery}
        log.info("%s delivery %s (%s %s@%s) → %s run %s in %.0f ms", kind, entry.delivery, parsed.event,
                 parsed.repo, parsed.sha[:12], entry.deployment, answer["flow_run_id"],
                 (time.monotonic() - started) * 1000)
        return 202, answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not hold up the exit
    request_queue_size = 128  # a burst of connections must not wait for SYN retries

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self.busy = 0
        self.idle = threading.Condition()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being handled (connections idle between requests do not count)."""
        with self.idle:
            return self.idle.wait_for(lambda: self.busy == 0, timeout)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "opsflow-webhook"
        sys_version = ""
        disable_nagle_algorithm = True
        timeout = 30

        def log_message(self, *args) -> None:  # access lines would carry nothing the app log lacks
            return

        def _answer(self, status: int, payload: dict | None, close: bool = False) -> None:
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            if status == 405:
                self.send_header("Allow", "POST")
            self.send_header("Content-Length", str(len(data)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

        def _read_body(self, length: int) -> bytes:
            self._body_read = True
            try:
                body = self.rfile.read(length)
            except OSError:  # includes the socket timeout
                raise BodyIncomplete from None
            if len(body) != length:
                raise BodyIncomplete
            return body

        def _discard_unread(self, limit: int = 4 << 20, seconds: float = 1.0) -> None:
            """Drain (a bounded part of) a body we did not read, so the client sees our answer, not a reset."""
            try:
                self.connection.settimeout(seconds)
                while limit > 0 and (chunk := self.rfile.read1(min(limit, 65536))):
                    limit -= len(chunk)
            except OSError:
                pass

        def do_POST(self) -> None:
            started = time.monotonic()
            with self.server.idle:
                self.server.busy += 1
            try:
                self._body_read = False
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    status, payload = receiver.handle(self.path, headers, self._read_body, started)
                except Exception:
                    log.exception("delivery failed")
                    status, payload = 500, {"error": "internal error; see the receiver's log"}
                unread = not self._body_read and (headers.get("content-length", "0").strip() != "0"
                                                  or "transfer-encoding" in headers)
                self._answer(status, payload, close=unread)
                if unread:
                    self._discard_unread()
            finally:
                with self.server.idle:
                    self.server.busy -= 1
                    self.server.idle.notify_all()

        def do_GET(self) -> None:
            if urlsplit(self.path).path in ("/", "/healthz"):
                self._answer(200, {"status": "ok", "forge": receiver.kind})
            else:
                self._answer(405, {"error": f"deliveries are POSTed to /hooks/{receiver.kind}"})

        def _not_allowed(self) -> None:
            self._answer(405, {"error": f"deliveries are POSTed to /hooks/{receiver.kind}"},
                         close="content-length" in self.headers or "transfer-encoding" in self.headers)

        do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    return Handler


def load_forge(forge_block: str) -> tuple[str, str]:
    """(kind, webhook secret) of the GitForge block; errors name the block, never its secrets."""
    from blocks import GitForge

    try:
        forge = GitForge.load(forge_block)
    except ValueError as exc:
        raise InvalidInput(f"cannot load the GitForge block {forge_block!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - httpx/Prefect errors: the API is down or refused
        raise RemoteError(f"cannot load the GitForge block {forge_block!r} from the Prefect API: "
                          f"{type(exc).__name__}; is PREFECT_API_URL right and the server up?") from None
    if forge.webhook_secret is None or not forge.webhook_secret.get_secret_value():
        raise InvalidInput(f"GitForge block {forge_block!r} has no webhook_secret; set one to verify deliveries")
    return forge.kind.value, forge.webhook_secret.get_secret_value()


def serve(forge_block: str, host: str = "127.0.0.1", port: int = 4300, journal: Path | None = None,
          max_body: int = DEFAULT_MAX_BODY, deployment: str = DEFAULT_DEPLOYMENT,
          answer_within_s: float = DEFAULT_ANSWER_WITHIN_S) -> None:
    """Receive deliveries for one GitForge block until SIGTERM/SIGINT.

    Raises:
        InvalidInput: the block does not exist or has no webhook secret.
        RemoteError: the Prefect API cannot be read at startup.
    """
    kind, secret = load_forge(forge_block)
    store = Journal(journal or Path(".opsflow") / "webhook" / "deliveries.sqlite3")
    pruned = store.prune()
    if pruned:
        log.info("forgot %d dispatched deliveries older than 30 days", pruned)
    dispatcher = Dispatcher(store)
    receiver = Receiver(forge_block=forge_block, kind=kind, secret=secret, journal=store, dispatcher=dispatcher,
                        apps=AppIndex(lambda: load_applications(dispatcher.client())), max_body=max_body,
                        deployment=deployment, answer_within_s=answer_within_s)
    httpd = _Server((host, port), _handler(receiver))
    stop = threading.Event()

    def _shutdown(*_):
        if not stop.is_set():
            stop.set()
            threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    _warm_up(receiver, dispatcher)
    dispatcher.start()
    log.info("receiving %s deliveries on http://%s:%d/hooks/%s", kind, host, port, kind)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        if not httpd.wait_idle(SHUTDOWN_GRACE_S):
            log.warning("stopping with requests still being handled; their deliveries stay recorded")
        httpd.server_close()
        dispatcher.stop()
        store.close()
        log.info("stopped")


def _warm_up(receiver: Receiver, dispatcher: Dispatcher) -> None:
    """Load the applications and the deployment ids now, so the first delivery pays for neither."""
    receiver.apps.get("")
    dispatcher.warm([f"{flow_name}/{receiver.deployment}" for flows in PIPELINES.values() for flow_name in flows])
