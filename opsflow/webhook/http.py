"""The receiver's HTTP server: uvicorn (h11) serving a Starlette app, with the limits a public endpoint needs.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``) and the connections it serves at once
(``limit_concurrency``: beyond it, an immediate 503), and terminates TLS (``ssl_certfile``/``ssl_keyfile``).
It has no deadline for a request's headers, though, and h11 folds a repeated ``Content-Length`` of the
same value into one before the app can see it. The issue that moved the receiver off the stdlib server
measured 250 clients sending their headers slowly, every one held 60 s; so :class:`GuardedH11Protocol`
(uvicorn's own h11 protocol, subclassed; uvicorn takes a protocol class in ``Config(http=…)``) adds:

* a header deadline: a request's head (request line and headers) must arrive within ``header_timeout_s``
  of the connection being opened, or of its first byte on a kept-alive connection; else ``408`` and close
  (an idle kept-alive connection is closed by uvicorn after ``timeout_keep_alive``);
* a refusal of any request whose head repeats ``Content-Length`` (``400``): two lengths, even equal ones,
  are how request smuggling starts, and no forge sends them.

The body deadline is the app's: it reads the body within ``body_timeout_s`` or answers ``408`` and closes.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("opsflow.webhook")


def _timeout_answer() -> bytes:
    body = b'{"error": "the request headers came too slowly"}'
    return (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def repeated_content_length(head: bytes) -> bool:
    """Whether a request head (request line and header lines) names ``Content-Length`` more than once."""
    names = [line.split(b":", 1)[0].strip().lower() for line in head.split(b"\r\n")[1:] if b":" in line]
    return names.count(b"content-length") > 1


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and the repeated-Content-Length refusal (see the module)."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head = bytearray()
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closed a connection from %s: no complete request head within %.0f s",
                     self.client[0] if self.client else "?", self.header_timeout_s)
            self.transport.write(_timeout_answer())
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # a request's head is coming in
            if self._deadline is None:  # the first bytes of the next request on a kept-alive connection
                self._arm()
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self._head[:end])
                self._head.clear()
                if repeated_content_length(head):
                    self._disarm()
                    self.send_400_response("Content-Length given more than once")
                    return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # an idle kept-alive connection is uvicorn's: closed after timeout_keep_alive
        self._head.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def guarded_protocol(header_timeout_s: float) -> type[GuardedH11Protocol]:
    """The protocol class for one server, with its header deadline."""
    return type("GuardedH11", (GuardedH11Protocol,), {"header_timeout_s": header_timeout_s})
