"""The webcast protocol: going live over a WebSocket (AzuraCast's Web DJ, Liquidsoap's harbor, our console).

A client opens ``ws[s]://SERVER/MOUNT`` with the subprotocol ``webcast`` (the
same mounts as the Icecast ingest: ``/ingest/CHANNEL``, ``/CHANNEL.ogg``,
``/ingest/zone/ZONE``), sends one text message first::

    {"type": "hello", "data": {"mime": "audio/webm;codecs=opus", "user": "...", "password": "..."}}

then binary messages that are consecutive pieces of one stream (MediaRecorder
chunks: WebM/Opus; any format the Icecast ingest takes), and, whenever it
likes, ``{"type": "metadata", "data": {"title": ..., "artist": ...}}``.

The connection only frames and bounds; the decision and the session are the
studio desk's (broadcaster/control/studio.py), exactly as for an Icecast
source: the hello's mime stands for the Content-Type, its user and password
for the Basic credentials (a hello with a password only logs in as ``source``,
Icecast's default source user, which then has to be a broadcaster user, as it
has to for an Icecast client). A refusal closes the socket with
``4000 + the HTTP status`` the Icecast ingest would answer (4401, 4403, 4404,
4409, 4415, 4429, 4507; 1011 for a server fault), and the message as reason.

What an unauthenticated client can cost is bounded: the head by the Sniffer,
the hello by time (HELLO_TIMEOUT_S from connecting) and size (MAX_HELLO_BYTES),
audio buffered while the password is checked by MAX_EARLY_BYTES (and so is any
message until the session is accepted; MAX_MESSAGE_BYTES after), pongs by
PONGS_PER_SECOND. A protocol error closes with its RFC 6455 code and is counted
(``broadcaster_webcast_rejected_total{reason}``; a malformed text message after
the hello is ignored, and counted as ``ignored_*``: a console's broken title
must not take it off air).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from broadcaster import metrics
from broadcaster.protocols import websocket as ws
from broadcaster.protocols.ingest import (
    MAX_EARLY_BYTES,
    MAX_HEAD_BYTES,
    STATUS_TEXT,
    IngestSession,
    Refusal,
    SourceRequest,
    parse_head,
)

log = logging.getLogger(__name__)

SUBPROTOCOL = "webcast"
DEFAULT_USER = "source"  # Icecast's default source user, what a hello without "user" logs in as
HELLO_TIMEOUT_S = 10.0
MAX_HELLO_BYTES = 16 * 1024
MAX_MESSAGE_BYTES = 1 << 20  # a MediaRecorder chunk is a few kilobytes a second of Opus
MAX_FIELD_CHARS = 1024  # a hello's or metadata's string field
PONGS_PER_SECOND = 10
CONNECTION_DONE = Failure(ConnectionDone())
CLOSE_GRACE_S = 5.0  # after our close frame (or HTTP error), the client has this long to read it
SERVER_FAULT, GOING_AWAY, TRY_AGAIN_LATER = 1011, 1001, 1013


class WebcastController(Protocol):
    def is_mount(self, path: str) -> bool:
        """A path a studio may go live on."""

    def open(self, request: SourceRequest, credentials: tuple[str, str] | None = None
             ) -> IngestSession | Deferred[IngestSession]:
        """Accept (a session, or a Deferred firing with one) or refuse (raise or fail with Refusal)."""

    def retitle(self, session: IngestSession, title: str, artist: str) -> None:
        """A metadata message: the session's channels show it (as /admin/metadata would)."""


@dataclass(frozen=True)
class Hello:
    mime: str
    user: str
    password: str


def close_code(refusal: Refusal) -> int:
    """The close code of a refusal: 4000 + its HTTP status, 1011 for a fault of ours."""
    return SERVER_FAULT if refusal.status >= 500 and refusal.status != 507 else 4000 + refusal.status


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise ws.WebSocketError(ws.PROTOCOL_ERROR, f"the {what} is not JSON", "bad_message") from None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ws.WebSocketError(ws.PROTOCOL_ERROR, f'the {what} is not {{"type": ..., "data": ...}}', "bad_message")
    return value


def _field(data: dict[str, Any], name: str, what: str, default: str | None = None) -> str:
    value = data.get(name, default)
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
        raise ws.WebSocketError(ws.PROTOCOL_ERROR, f"the {what}'s {name!r} must be a string of at most "
                                f"{MAX_FIELD_CHARS} characters", "bad_hello" if what == "hello" else "bad_message")
    return value


def parse_hello(text: str) -> Hello:
    """The first message: {"type": "hello", "data": {"mime": ..., "user"?: ..., "password": ...}}."""
    message = _json_object(text, "hello")
    data = message.get("data")
    if message["type"] != "hello" or not isinstance(data, dict):
        raise ws.WebSocketError(ws.PROTOCOL_ERROR, 'the first message must be {"type": "hello", "data": {...}}',
                                "bad_hello")
    return Hello(mime=_field(data, "mime", "hello"), user=_field(data, "user", "hello", DEFAULT_USER) or DEFAULT_USER,
                 password=_field(data, "password", "hello", ""))


def parse_metadata(text: str) -> tuple[str, str] | None:
    """(title, artist) of a metadata message; None for a message of another type (ignored, as the
    webcast protocol asks)."""
    message = _json_object(text, "message")
    if message["type"] != "metadata":
        return None
    data = message.get("data")
    if not isinstance(data, dict):
        raise ws.WebSocketError(ws.PROTOCOL_ERROR, "a metadata message's data must be an object", "bad_message")
    title = data.get("title", data.get("song", ""))
    artist = data.get("artist", "")
    return _field({"title": title}, "title", "metadata"), _field({"artist": artist}, "artist", "metadata")


class WebcastConnection(TwistedProtocol, TimeoutMixin):
    """One webcast client: the upgrade, the hello (with a deadline), the desk's decision, then audio."""

    def __init__(self, controller: WebcastController, clock: Callable[[], float] = time.monotonic) -> None:
        self.controller = controller
        self.clock = clock
        self.reader = ws.FrameReader(max_message=MAX_HELLO_BYTES)
        self._head = b""
        self.upgraded = False
        self.hello: Hello | None = None
        self._early: list[bytes] = []  # audio that came while the decision was pending
        self._early_bytes = 0
        self._title: tuple[str, str] | None = None  # a title that came while the decision was pending
        self._pongs: tuple[float, int] = (0.0, 0)
        self.session: IngestSession | None = None
        self.closing = False  # a close frame went out: nothing more is read or written
        self.disconnected = False
        self.clean = False  # the client closed with a close frame
        self.failed = False  # we closed it for an error: its session ends as failed, however the TCP ends

    # --- the connection -------------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        self.setTimeout(HELLO_TIMEOUT_S)

    def timeoutConnection(self) -> None:  # noqa: N802
        if self.closing:  # our close frame went out CLOSE_GRACE_S ago and the client is still there
            if self.transport is not None:
                self.transport.abortConnection()  # type: ignore[attr-defined]
        elif self.hello is None:
            self._protocol_error(ws.WebSocketError(ws.POLICY, f"no hello within {HELLO_TIMEOUT_S:.0f} s", "timeout"))
        elif self.session is None:  # the password check is queued behind others (a flood): try later
            self._protocol_error(ws.WebSocketError(TRY_AGAIN_LATER, "the server is busy: try again",
                                                   "decision_timeout"))
        else:
            self.failed = True
            self._close(ws.POLICY, "no audio for too long")  # a studio whose network died without a FIN

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.closing:
            return
        if not self.upgraded:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD_BYTES:
                    self._http_error(431, "request headers too large")
                return
            head, rest = self._head[:end], self._head[end + 4:]
            self._head = b""
            if not self._upgrade(head):
                return
            data = rest
        try:
            events = self.reader.feed(data)
            for event in events:
                if self.closing:
                    return
                self._event(event)
        except ws.WebSocketError as exc:
            self._protocol_error(exc)

    def _upgrade(self, head: bytes) -> bool:
        peer = getattr(self.transport.getPeer(), "host", "?") if self.transport else "?"
        try:
            request = parse_head(head, peer)
            key = ws.check_upgrade(request.method, request.version, request.headers)
        except Refusal as refusal:
            self._http_error(refusal.status, refusal.message)
            return False
        except ws.HandshakeError as exc:
            self._http_error(exc.status, exc.message, exc.headers)
            return False
        if SUBPROTOCOL not in ws.tokens(request.headers.get("sec-websocket-protocol", "")):
            self._http_error(400, "offer the subprotocol 'webcast' (new WebSocket(url, \"webcast\"))")
            return False
        self.request = request
        assert self.transport is not None
        self.transport.write(ws.accept_response(key, SUBPROTOCOL))
        self.upgraded = True
        return True

    def _http_error(self, status: int, message: str, headers: str = "") -> None:
        metrics.webcast_rejected_total.labels("bad_handshake").inc()
        body = message.encode("utf-8") + b"\n"
        assert self.transport is not None
        self.transport.write(f"HTTP/1.1 {status} {STATUS_TEXT.get(status, 'Error')}\r\n"
                             f"Server: broadcaster\r\nContent-Type: text/plain; charset=utf-8\r\n"
                             f"Content-Length: {len(body)}\r\n{headers}Connection: close\r\n\r\n".encode("latin-1")
                             + body)
        self.closing = True
        self.transport.loseConnection()
        self.setTimeout(CLOSE_GRACE_S)

    # --- frames ---------------------------------------------------------------------------

    def _event(self, event: ws.Event) -> None:
        if isinstance(event, ws.Ping):
            self._pong(event.data)
        elif isinstance(event, ws.Close):
            self.clean = True
            self._close(1000, "")  # the answer to the client's close: then the TCP close
        elif isinstance(event, ws.Message):
            if self.hello is None:
                self._hello(event)
            elif event.kind == "binary":
                self._audio(event.data)
            else:
                self._text(event.text)

    def _pong(self, data: bytes) -> None:
        """Answer pings, at most PONGS_PER_SECOND (a flood of pings from a client that reads nothing
        must not fill our send buffer; RFC 6455 lets a pong answer only the latest ping)."""
        now = self.clock()
        start, count = self._pongs
        if now - start >= 1.0:
            start, count = now, 0
        if count < PONGS_PER_SECOND and self.transport is not None:
            self.transport.write(ws.encode_frame(ws.OP_PONG, data))
            count += 1
        self._pongs = (start, count)

    def _hello(self, message: ws.Message) -> None:
        if message.kind != "text":
            raise ws.WebSocketError(ws.PROTOCOL_ERROR, "the first message must be the hello (text)", "bad_hello")
        hello = parse_hello(message.text)
        self.hello = hello
        # Until the desk accepts, a message is bounded as the early audio is: an unchecked client must
        # not make us hold a MAX_MESSAGE_BYTES frame (64 connections an address, times that).
        self.reader.max_message = MAX_EARLY_BYTES
        request = replace(self.request, headers={**self.request.headers, "content-type": hello.mime})
        try:
            decision = self.controller.open(request, (hello.user, hello.password))
        except Refusal as refusal:
            self._refuse(refusal)
            return
        except Exception:
            log.exception("webcast: opening a session failed")
            self._refuse(Refusal(500, "internal", "the server could not start the session; see its log"))
            return
        if isinstance(decision, Deferred):
            decision.addCallbacks(self._accepted, self._failed)
        else:
            self._accepted(decision)

    def _audio(self, data: bytes) -> None:
        if self.session is not None:
            self.resetTimeout()  # the idle timeout: audio keeps it alive
            self._feed(data)
            return
        if self._early_bytes + len(data) > MAX_EARLY_BYTES:
            raise ws.WebSocketError(ws.POLICY, f"more than {MAX_EARLY_BYTES // 1024} KiB of audio before the "
                                    "login was decided", "early_audio")
        self._early.append(data)
        self._early_bytes += len(data)
        # What may still arrive before the decision is what is left of the bound: a message on its way
        # is held too, so the two together never pass MAX_EARLY_BYTES.
        self.reader.max_message = max(1, MAX_EARLY_BYTES - self._early_bytes)

    def _text(self, text: str) -> None:
        try:
            title = parse_metadata(text)
        except ws.WebSocketError as exc:
            # The stream goes on: a console with a broken metadata message should not lose its air.
            metrics.webcast_rejected_total.labels("ignored_" + exc.label).inc()
            log.info("webcast from %s: a text message ignored: %s", self.request.peer, exc.reason)
            return
        if title is None:
            return
        if self.session is None:
            self._title = title
        else:
            self.controller.retitle(self.session, *title)

    # --- the decision ---------------------------------------------------------------------

    def _failed(self, failure: Failure) -> None:
        if failure.check(Refusal):
            self._refuse(failure.value)
        else:
            log.error("webcast: opening a session failed: %s", failure.getTraceback())
            self._refuse(Refusal(500, "internal", "the server could not start the session; see its log"))

    def _accepted(self, session: IngestSession) -> None:
        if self.transport is None or self.disconnected or self.closing:
            session.close(clean=False)  # the client went while we were checking it
            return
        self.session = session
        session.attach(self)
        self.reader.max_message = MAX_MESSAGE_BYTES  # accepted: a studio's chunks may be bigger
        self.setTimeout(session.idle_timeout_s)
        if self._title is not None:
            self.controller.retitle(session, *self._title)
            self._title = None
        early, self._early, self._early_bytes = self._early, [], 0
        for data in early:
            if self.session is None:
                break
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        assert self.session is not None
        try:
            self.session.feed(data)
        except Refusal as refusal:  # not a format we decode, or no room to record: the session ends
            session, self.session = self.session, None
            session.close(clean=False)
            self._close(close_code(refusal), refusal.message)

    def _refuse(self, refusal: Refusal) -> None:
        self._close(close_code(refusal), refusal.message)

    def _protocol_error(self, exc: ws.WebSocketError) -> None:
        self.failed = True
        metrics.webcast_rejected_total.labels(exc.label).inc()
        peer = self.request.peer if hasattr(self, "request") else "?"
        log.info("webcast from %s closed (%d): %s", peer, exc.code, exc.reason)
        self._close(exc.code, exc.reason)

    def _close(self, code: int, reason: str) -> None:
        """Send a close frame (once) and end the connection; the session, if any, ends with it.
        After connectionLost nothing is written and no timer armed (Twisted leaves ``transport`` set,
        and a decision failing late still lands here)."""
        if self.closing or self.disconnected or self.transport is None:
            return
        self.closing = True
        self.transport.write(ws.close_frame(code, reason))
        self.transport.loseConnection()
        self.setTimeout(CLOSE_GRACE_S)  # a client that reads nothing must not keep the socket

    def hang_up(self) -> None:
        """The desk ends the session (replaced by a new source, killed, the server stopping)."""
        session, self.session = self.session, None
        if session is not None:
            session.close(clean=False)
        self._close(GOING_AWAY, "the session was ended by the server")

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:  # noqa: N802
        self.disconnected = True
        self.setTimeout(None)
        if self.session is not None:
            session, self.session = self.session, None
            session.close(clean=not self.failed and (self.clean or reason.check(ConnectionDone) is not None))
