"""HTTP listeners: an endless Ogg/Opus response per listener, Icecast style.

The channel builds each Ogg page once, and its HTTP/1.1 chunk framing once
(``chunk``); a listener only writes it, with one send() on its socket while
nothing is queued for it (protocols/sendnow.py; benchmarks/listeners.py).
Whatever the socket does not take goes to the transport, which buffers it and
pauses us; a listener
that cannot keep up is disconnected once its backlog passes a bound, so one
slow phone on 3G never grows the server's memory or delays anyone else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IPushProducer
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from broadcaster.protocols.sendnow import send_now, socket_of


class Stream(Protocol):
    """What a listener needs from a channel."""

    id: str
    name: str
    description: str

    def stream_start(self) -> bytes: ...

    def add_listener(self, listener: OggListener) -> None: ...

    def remove_listener(self, listener: OggListener) -> None: ...


@implementer(IPushProducer)
class OggListener:
    def __init__(self, request: Request, stream: Stream, max_backlog_bytes: int,
                 on_drop: Callable[[str], None]) -> None:
        self.request = request
        self.stream = stream
        self.max_backlog_bytes = max_backlog_bytes
        self.on_drop = on_drop
        self.paused = False
        self.backlog = 0
        self.closed = False
        self.chunked = False
        self.transport: Any = None
        self._socket: Any = None

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addBoth(self._finished)
        self.stream.add_listener(self)
        self.request.write(self.stream.stream_start())  # the response head, then the start, framed by twisted
        # From here on pages are written ready-framed, past twisted.web's Request.write.
        self.chunked = bool(getattr(self.request, "chunked", False))
        self.transport = self.request.channel.transport if self.request.channel else None
        self._socket = socket_of(self.transport)

    def write_page(self, page: bytes, chunk: bytes | None = None) -> None:
        """``chunk``: the page in HTTP/1.1 chunk framing, built once for every listener."""
        if self.closed or self.transport is None:
            return
        data = (chunk or frame_chunk(page)) if self.chunked else page
        if self.paused:
            self.backlog += len(data)
            if self.backlog > self.max_backlog_bytes:
                self.drop("slow")
                return
        send_now(self.transport, self._socket, data)

    def drop(self, reason: str) -> None:
        if self.closed:
            return
        self.on_drop(reason)
        self._close()
        transport = self.request.channel.transport if self.request.channel else None
        if transport is not None:
            transport.abortConnection()  # type: ignore[attr-defined]  # TCP transports have it

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stream.remove_listener(self)

    def _finished(self, _: object) -> None:
        self._close()

    # IPushProducer: Twisted pauses us when the socket's send buffer is full.
    def pauseProducing(self) -> None:  # noqa: N802
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False
        self.backlog = 0

    def stopProducing(self) -> None:  # noqa: N802
        self._close()


def frame_chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (RFC 9112 7.1)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def stream_headers(request: Request, content_type: bytes, name: str, description: str) -> None:
    """What a player and an Icecast directory expect of a listener stream (Ogg or MP3): never
    cached, and icy-name/description as raw UTF-8, as icecast2 sends them."""
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Cache-Control", b"no-cache, no-store")
    request.setHeader(b"Pragma", b"no-cache")
    request.setHeader(b"icy-name", name.encode("utf-8"))
    request.setHeader(b"icy-description", description.encode("utf-8"))
    request.setHeader(b"icy-pub", b"1")
    request.setHeader(b"Server", b"broadcaster")


def serve_stream(request: Request, stream: Stream, *, max_backlog_bytes: int,
                 on_drop: Callable[[str], None]) -> object:
    """Answer a GET with the stream: headers a player and an Icecast directory expect."""
    stream_headers(request, b"audio/ogg", stream.name, stream.description)
    if request.method == b"HEAD":
        return b""
    OggListener(request, stream, max_backlog_bytes, on_drop).start()
    return NOT_DONE_YET
