"""HTTP listener back-pressure: a slow listener is dropped once its backlog passes the bound."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import Deferred

from broadcaster.protocols.listener import OggListener, frame_chunk


class FakeTransport:
    """A transport with no socket of its own to send on (as TLS would be): writes are recorded."""

    def __init__(self, written: list[bytes]) -> None:
        self.aborted = False
        self.written = written

    def abortConnection(self) -> None:
        self.aborted = True

    def write(self, data: bytes) -> None:
        self.written.append(data)


class SocketTransport(FakeTransport):
    """What a listener sees of twisted's TCP transport: its socket, and its write buffer."""

    def __init__(self, written: list[bytes], sock: socket.socket) -> None:
        super().__init__(written)
        self.socket = sock
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataBuffer: list[bytes] = []

    def write(self, data: bytes) -> None:
        super().write(data)
        self._tempDataBuffer.append(data)


class FakeChannel:
    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport


class FakeRequest:
    """The parts of twisted.web's Request that a listener uses."""

    def __init__(self, sock: socket.socket | None = None, chunked: bool = False) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None
        self.finished: Deferred[None] = Deferred()
        self.chunked = chunked
        self.channel = FakeChannel(SocketTransport(self.written, sock) if sock else FakeTransport(self.written))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def notifyFinish(self) -> Deferred[None]:
        return self.finished

    def write(self, data: bytes) -> None:
        self.written.append(data)


class Stream:
    id = name = description = "ch"

    def __init__(self) -> None:
        self.listeners: set[Any] = set()

    def stream_start(self) -> bytes:
        return b"HEADERS+BURST"

    def add_listener(self, listener: Any) -> None:
        self.listeners.add(listener)

    def remove_listener(self, listener: Any) -> None:
        self.listeners.discard(listener)


def start(max_backlog: int = 10_000, sock: socket.socket | None = None,
          chunked: bool = False) -> tuple[FakeRequest, Stream, OggListener, list[str]]:
    request, stream, drops = FakeRequest(sock, chunked), Stream(), []
    listener = OggListener(request, stream, max_backlog, drops.append)  # type: ignore[arg-type]  # fake request
    listener.start()
    return request, stream, listener, drops


def test_new_listener_gets_headers_and_burst_first() -> None:
    request, stream, listener, _ = start()
    assert request.written == [b"HEADERS+BURST"] and request.producer is listener
    assert listener in stream.listeners
    listener.write_page(b"page")
    assert request.written[-1] == b"page"


def test_slow_listener_is_dropped_after_the_backlog_bound() -> None:
    request, stream, listener, drops = start(max_backlog=10_000)
    listener.pauseProducing()  # the socket's buffer is full
    for _ in range(2):
        listener.write_page(b"x" * 4000)
    assert drops == [] and not request.channel.transport.aborted
    listener.write_page(b"x" * 4000)  # 12,000 > 10,000
    assert drops == ["slow"] and request.channel.transport.aborted
    assert listener not in stream.listeners
    written = len(request.written)
    listener.write_page(b"more")
    assert len(request.written) == written, "nothing more is buffered for a dropped listener"


def test_a_listener_that_catches_up_is_kept() -> None:
    request, stream, listener, drops = start(max_backlog=10_000)
    for _ in range(10):
        listener.pauseProducing()
        listener.write_page(b"x" * 6000)
        listener.resumeProducing()
    assert drops == [] and listener in stream.listeners


def test_disconnect_removes_the_listener() -> None:
    request, stream, listener, drops = start()
    request.finished.callback(None)
    assert listener not in stream.listeners and drops == []


def test_pages_go_straight_to_the_socket_framed_once_and_the_rest_queues_in_order() -> None:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.setblocking(False)
    request, stream, listener, drops = start(max_backlog=1 << 20, sock=ours, chunked=True)
    assert request.written == [b"HEADERS+BURST"], "the start goes through twisted.web (it writes the head)"
    page = b"p" * 1000
    chunk = frame_chunk(page)
    assert chunk == b"3e8\r\n" + page + b"\r\n"
    listener.write_page(page, chunk)
    assert theirs.recv(4096) == chunk and request.written == [b"HEADERS+BURST"], "one send, nothing queued"
    pages = [bytes([65 + i]) * 30_000 for i in range(4)]  # more than the socket takes
    for big in pages:
        listener.write_page(big, frame_chunk(big))
    queued = b"".join(request.written[1:])
    assert queued, "what the socket did not take went to the transport"
    theirs.setblocking(False)
    received = b""
    while True:
        try:
            received += theirs.recv(1 << 20)
        except BlockingIOError:
            break
    assert received + queued == b"".join(frame_chunk(big) for big in pages), "nothing lost, nothing reordered"
    assert drops == []
    ours.close()
    theirs.close()


def test_a_listener_without_chunking_gets_the_bare_page() -> None:
    ours, theirs = socket.socketpair()
    _, _, listener, _ = start(sock=ours, chunked=False)
    listener.write_page(b"page", frame_chunk(b"page"))
    assert theirs.recv(100) == b"page"
    ours.close()
    theirs.close()


def test_a_tls_transport_is_never_written_around() -> None:
    """TLS wraps the TCP transport and forwards unknown attributes to it: its socket must not be used."""
    from twisted.internet.protocol import Factory, Protocol
    from twisted.internet.ssl import CertificateOptions
    from twisted.internet.testing import StringTransport
    from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

    from broadcaster.protocols.sendnow import socket_of

    a, b = socket.socketpair()
    try:
        tcp = SocketTransport([], a)
        assert socket_of(tcp) is a
        wrapper = TLSMemoryBIOProtocol(TLSMemoryBIOFactory(CertificateOptions(), True, Factory()), Protocol())
        wrapper.transport = tcp  # type: ignore[assignment]
        assert wrapper.socket is a  # what duck typing would have found
        assert socket_of(wrapper) is None
        assert socket_of(StringTransport()) is None
    finally:
        a.close()
        b.close()
