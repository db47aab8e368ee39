"""HTTP listener back-pressure: a slow listener is dropped once its backlog passes the bound."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from broadcaster.protocols.listener import OggListener


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class FakeChannel:
    def __init__(self) -> None:
        self.transport = FakeTransport()


class FakeRequest:
    """The parts of twisted.web's Request that a listener uses."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None
        self.finished: Deferred[None] = Deferred()
        self.channel = FakeChannel()

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


def start(max_backlog: int = 10_000) -> tuple[FakeRequest, Stream, OggListener, list[str]]:
    request, stream, drops = FakeRequest(), Stream(), []
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
