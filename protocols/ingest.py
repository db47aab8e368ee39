"""Icecast-compatible source ingest on the HTTP port.

Studio tools (ffmpeg, BUTT, Mixxx, liquidsoap, libshout) send ``PUT`` (or
the legacy ``SOURCE``) followed by an endless body with no length and no
chunking. twisted.web cannot take such a body, so the port's protocol
(protocols/sniffer.py) looks at the request line first: ``PUT`` and
``SOURCE`` come here, to ``IngestConnection``. The connection only
parses and frames; whether the source may go on air is the controller's
decision (broadcaster/control/studio.py), made before the ``200``: a format
refusal (415) must reach the client before it starts sending audio.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

log = logging.getLogger(__name__)

CONNECTION_DONE = Failure(ConnectionDone())
MAX_HEAD_BYTES = 16 * 1024
MAX_EARLY_BYTES = 256 * 1024  # audio buffered while credentials are checked (16 s at 128 kb/s)
STATUS_TEXT = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
               405: "Method Not Allowed", 409: "Conflict", 415: "Unsupported Media Type", 426: "Upgrade Required",
               429: "Too Many Requests",
               431: "Request Header Fields Too Large",
               500: "Internal Server Error", 503: "Service Unavailable", 507: "Insufficient Storage"}


@dataclass(frozen=True)
class SourceRequest:
    method: str
    path: str
    version: str
    headers: dict[str, str]  # lower-case names
    peer: str


class Refusal(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class IngestSession(Protocol):
    idle_timeout_s: float

    def attach(self, connection: IngestConnection) -> None: ...

    def feed(self, data: bytes) -> None: ...

    def close(self, clean: bool) -> None: ...


class IngestController(Protocol):
    def open(self, request: SourceRequest) -> IngestSession | Deferred[IngestSession]:
        """Accept (a session, or a Deferred firing with one) or refuse (raise or fail with Refusal)."""


def parse_head(head: bytes, peer: str) -> SourceRequest:
    try:
        text = head.decode("latin-1")
        request_line, *header_lines = text.split("\r\n")
        method, path, version = request_line.split(" ")
    except ValueError:
        raise Refusal(400, "malformed", "malformed request line") from None
    headers: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise Refusal(400, "malformed", f"malformed header line {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    return SourceRequest(method=method, path=path, version=version, headers=headers, peer=peer)


def _response(status: int, message: str, version: str = "HTTP/1.0", extra: str = "") -> bytes:
    body = message.encode("utf-8") + b"\n"
    return (f"{version} {status} {STATUS_TEXT.get(status, 'Error')}\r\nServer: broadcaster\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n{extra}"
            "Connection: close\r\n\r\n").encode("latin-1") + body


class IngestConnection(TwistedProtocol, TimeoutMixin):
    """One source connection: headers (with a deadline), the controller's decision
    (which may take a moment: a password check runs off the reactor), then audio."""

    HEADER_TIMEOUT_S = 10.0

    def __init__(self, controller: IngestController) -> None:
        self.controller = controller
        self._head = b""
        self._early = b""  # audio that arrived while the decision was pending
        self._deciding = False
        self.disconnected = False
        self.session: IngestSession | None = None

    def connectionMade(self) -> None:  # noqa: N802
        self.setTimeout(self.HEADER_TIMEOUT_S)

    def timeoutConnection(self) -> None:  # noqa: N802
        # A studio that stopped sending without closing (or a client that never
        # finished its headers) must not hold a channel or a socket forever.
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.session is not None:
            self.resetTimeout()  # the idle timeout: audio keeps it alive
            self._feed(data)
            return
        # Before the session: the header deadline runs from the connection, and bytes
        # trickled one at a time do not extend it.
        if self._deciding:
            if len(self._early) + len(data) <= MAX_EARLY_BYTES:
                self._early += data
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD_BYTES:
                self._refuse(Refusal(431, "headers_too_large", "request headers too large"))
            return
        head, self._early = self._head[:end], self._head[end + 4:]
        self._head = b""
        peer = getattr(self.transport.getPeer(), "host", "?") if self.transport else "?"
        try:
            request = parse_head(head, peer)
            decision = self.controller.open(request)
        except Refusal as refusal:
            self._refuse(refusal)
            return
        except Exception:
            log.exception("ingest: opening a session failed")
            self._refuse(Refusal(500, "internal", "the server could not start the session; see its log"))
            return
        self._deciding = True
        if isinstance(decision, Deferred):
            decision.addCallbacks(lambda session: self._accepted(request, session), self._failed)
        else:
            self._accepted(request, decision)

    def _failed(self, failure: Failure) -> None:
        self._deciding = False
        if failure.check(Refusal):
            self._refuse(failure.value)
        else:
            log.error("ingest: opening a session failed: %s", failure.getTraceback())
            self._refuse(Refusal(500, "internal", "the server could not start the session; see its log"))

    def _accepted(self, request: SourceRequest, session: IngestSession) -> None:
        self._deciding = False
        if self.transport is None or self.disconnected:
            session.close(clean=False)  # the studio hung up while we were checking it
            return
        self.session = session
        session.attach(self)
        self.setTimeout(session.idle_timeout_s)
        if request.headers.get("expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        else:
            self.transport.write(b"HTTP/1.0 200 OK\r\nServer: broadcaster\r\n\r\n")
        early, self._early = self._early, b""
        if early:
            self._feed(early)

    def _feed(self, data: bytes) -> None:
        assert self.session is not None
        try:
            self.session.feed(data)
        except Refusal:
            # The stream is unusable (not a format we decode): the response has
            # gone already, so all that is left is to end the session and hang up.
            self.hang_up()

    def hang_up(self) -> None:
        """End the session as failed and drop the connection (also used to replace a dead studio)."""
        session, self.session = self.session, None
        if session is not None:
            session.close(clean=False)
        if self.transport is not None:
            self.transport.loseConnection()

    def _refuse(self, refusal: Refusal) -> None:
        assert self.transport is not None
        extra = 'WWW-Authenticate: Basic realm="broadcaster"\r\n' if refusal.status == 401 else ""
        self.transport.write(_response(refusal.status, refusal.message, extra=extra))
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:  # noqa: N802
        self.disconnected = True
        self.setTimeout(None)
        if self.session is not None:
            session, self.session = self.session, None
            session.close(clean=reason.check(ConnectionDone) is not None)
