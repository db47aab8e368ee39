"""The HTTP port's first look at a connection: Icecast source, webcast, or the web.

Each connection's first request decides where the connection goes: ``PUT``
(but not to /api/) and ``SOURCE`` go to the Icecast ingest
(protocols/ingest.py) as soon as the method is read; a ``GET`` is held until
its head is in (at most MAX_HEAD_BYTES, within HEAD_TIMEOUT_S) and goes to
the webcast ingest (protocols/webcast.py) only if it asks for
``Upgrade: websocket`` on a studio mount; everything else goes to twisted.web
with the bytes read so far, untouched.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from broadcaster.protocols.ingest import CONNECTION_DONE, MAX_HEAD_BYTES, IngestConnection, IngestController
from broadcaster.protocols.webcast import WebcastConnection, WebcastController
from broadcaster.protocols.websocket import tokens

INGEST_METHODS = (b"PUT", b"SOURCE")
API_PREFIX = b"/api/"


def wants_webcast(head: bytes, webcast: WebcastController) -> bool:
    """A GET head asking for a WebSocket on a studio mount (the handshake itself is checked later)."""
    request_line, _, rest = head.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET":
        return False
    for line in rest.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"upgrade":
            if "websocket" in tokens(value.decode("latin-1")):
                return webcast.is_mount(parts[1].decode("latin-1"))
    return False


class Sniffer(TwistedProtocol, TimeoutMixin):
    """Reads the request line (and a GET's head), then hands the connection to ingest, webcast or twisted.web.

    A connection must send its first request's whole head within HEAD_TIMEOUT_S
    of connecting, however slowly it trickles: a thousand silent or trickling
    sockets must not hold the port (the web's own idle timeout, and the ingest's
    idle timeout, take over once the head is in)."""

    HEAD_TIMEOUT_S = 10.0

    def __init__(self, web: Any, ingest: IngestController, call_later: Any = None,
                 webcast: WebcastController | None = None) -> None:
        self.web_factory = web
        self.ingest = ingest
        self.webcast = webcast
        self.delegate: TwistedProtocol | None = None
        self._buffer = b""
        self._tail = b""  # the last bytes seen, to find the end of the head across reads
        self._head_done = False
        if call_later is not None:
            self.callLater = call_later  # type: ignore[method-assign]

    def connectionMade(self) -> None:  # noqa: N802
        self.setTimeout(self.HEAD_TIMEOUT_S)

    def timeoutConnection(self) -> None:  # noqa: N802
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _watch_head(self, data: bytes) -> None:
        if self._head_done:
            return
        seen = self._tail + data
        if b"\r\n\r\n" in seen:
            self._head_done = True
            self.setTimeout(None)
        else:
            self._tail = seen[-3:]

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self._watch_head(data)
        if self.delegate is not None:
            self.delegate.dataReceived(data)
            return
        self._buffer += data
        if b" " not in self._buffer and len(self._buffer) < 16:
            return
        method = self._buffer.split(b" ", 1)[0]
        if method == b"PUT":  # a studio, unless it is the API's (an edit): /api/ is never a mount
            path = self._buffer[len(method) + 1:]
            if len(path) < len(API_PREFIX) and API_PREFIX.startswith(path):
                return
            if path.startswith(API_PREFIX):
                method = b"PUT-API"
        webcast = False
        if method == b"GET" and self.webcast is not None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0 and len(self._buffer) <= MAX_HEAD_BYTES:
                return  # the head is not in yet (its deadline runs)
            webcast = end >= 0 and wants_webcast(self._buffer[:end], self.webcast)
        transport: ITransport = self.transport  # type: ignore[assignment]
        if method in INGEST_METHODS:
            self.delegate = IngestConnection(self.ingest)
        elif webcast:
            assert self.webcast is not None
            self.delegate = WebcastConnection(self.webcast)
        else:
            self.delegate = self.web_factory.buildProtocol(transport.getPeer())
        assert self.delegate is not None
        self.delegate.makeConnection(transport)
        data, self._buffer = self._buffer, b""
        self.delegate.dataReceived(data)

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:  # noqa: N802
        self.setTimeout(None)
        factory = getattr(self, "factory", None)
        if factory is not None and hasattr(factory, "closed"):
            factory.closed(self)
        if self.delegate is not None:
            self.delegate.connectionLost(reason)
