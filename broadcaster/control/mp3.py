"""The MP3 listener stream of each public channel (``/channels/{id}.mp3``, ``/{id}.mp3``).

For players and directories that take only MP3 (older internet radios, car
units, Shoutcast-era tools). The channel's Ogg pages are re-encoded once
(libmp3lame, control/transcode.py) and only while at least one MP3 listener
is connected; every listener gets the same bytes, written the way Ogg
listeners get theirs (protocols/listener.py: one send while nothing is queued,
dropped when its backlog passes ``http.max_backlog_bytes``). A listener that
sent ``Icy-MetaData: 1`` gets ICY title blocks (protocols/icy.py) at its own
byte positions, so only those listeners cost a copy of each chunk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.web.server import NOT_DONE_YET, Request

from broadcaster import metrics
from broadcaster.codecs.encoders import Mp3Encoder
from broadcaster.config import Mp3Config
from broadcaster.control.transcode import OpusPages, Runner, Tap
from broadcaster.protocols.icy import IcyInserter
from broadcaster.protocols.listener import OggListener, frame_chunk, stream_headers


def title_of(channel: Any) -> str:
    """What is on air, as /admin/metadata set it (ChannelView.title), or the channel's name."""
    return getattr(channel, "title", None) or channel.name


class Mp3Pipeline:
    """Ogg pages in, MP3 bytes out. Lives on the transcode thread."""

    def __init__(self, bitrate: int) -> None:
        self._pcm = OpusPages()
        self._mp3 = Mp3Encoder(bitrate)

    def feed(self, pages: bytes) -> bytes:
        return self._mp3.encode(self._pcm.decode(pages))


class Mp3Channel:
    """One channel's MP3 stream: its encoder while anyone listens, and its listeners.

    It is the ``Stream`` protocols/listener.py's listeners are given (id, name,
    description, add/remove_listener); the recent MP3 chunks (``burst_chunks`` of
    them) start a new listener at once, as the Ogg burst does."""

    def __init__(self, channel: Any, config: Mp3Config, run: Runner, burst_chunks: int) -> None:
        self.channel = channel
        self.config = config
        self.id = channel.id
        self.name = channel.name
        self.description = channel.description
        self.listeners: set[Mp3Listener] = set()
        self.burst: deque[bytes] = deque(maxlen=max(1, burst_chunks))
        self._run = run
        self._tap: Tap[bytes] | None = None
        self._gauge = metrics.mp3_listeners.labels(channel.id)
        self._bytes = metrics.transcoded_bytes_sent_total.labels(channel.id, "mp3")

    @property
    def running(self) -> bool:
        return self._tap is not None

    def stream_start(self) -> bytes:
        return b""  # the burst is written by Mp3Listener.start, through its ICY inserter

    def add_listener(self, listener: Mp3Listener) -> None:
        self.listeners.add(listener)
        self._gauge.set(len(self.listeners))
        if self._tap is None:
            self.burst.clear()
            self._tap = Tap(self.channel, "mp3", Mp3Pipeline(self.config.bitrate).feed, self._encoded, self._run)
            self._tap.start()

    def remove_listener(self, listener: Mp3Listener) -> None:
        self.listeners.discard(listener)
        self._gauge.set(len(self.listeners))
        if not self.listeners and self._tap is not None:
            self._tap.stop()
            self._tap = None

    def _encoded(self, data: bytes) -> None:
        if not data:
            return
        self.burst.append(data)
        chunk = frame_chunk(data)  # once for every HTTP/1.1 listener without metadata
        for listener in list(self.listeners):
            listener.write_page(data, chunk)
        self._bytes.inc(len(data) * len(self.listeners))

    def stop(self) -> None:
        for listener in list(self.listeners):
            listener.drop("stopping")


class Mp3Listener(OggListener):
    """An Ogg listener's sending and slow-listener rule, with ICY metadata when asked for."""

    def __init__(self, request: Request, stream: Mp3Channel, max_backlog_bytes: int,
                 on_drop: Callable[[str], None], icy: IcyInserter | None) -> None:
        super().__init__(request, stream, max_backlog_bytes, on_drop)
        self.mp3 = stream
        self.icy = icy

    def start(self) -> None:
        super().start()
        burst = b"".join(self.mp3.burst)
        if burst:
            self.write_page(burst)

    def write_page(self, page: bytes, chunk: bytes | None = None) -> None:
        if self.icy is not None:
            page, chunk = self.icy.insert(page, title_of(self.mp3.channel)), None
        super().write_page(page, chunk)


class Mp3Desk:
    def __init__(self, config: Mp3Config, run: Runner, burst_chunks: int) -> None:
        self.config = config
        self._run = run
        self._burst_chunks = burst_chunks
        self.channels: dict[str, Mp3Channel] = {}

    def of(self, channel: Any) -> Mp3Channel:
        mp3 = self.channels.get(channel.id)
        if mp3 is None:
            mp3 = self.channels[channel.id] = Mp3Channel(channel, self.config, self._run, self._burst_chunks)
        return mp3

    @property
    def listeners(self) -> int:
        return sum(len(mp3.listeners) for mp3 in self.channels.values())

    def stop(self) -> None:
        for mp3 in self.channels.values():
            mp3.stop()


def serve_mp3(request: Request, mp3: Mp3Channel, *, max_backlog_bytes: int,
              on_drop: Callable[[str], None]) -> object:
    """Answer a GET with the MP3 stream and the headers Icecast gives an MP3 mount."""
    icy = (request.getHeader(b"icy-metadata") or b"").strip() == b"1"
    stream_headers(request, b"audio/mpeg", mp3.name, mp3.description)
    request.setHeader(b"icy-br", str(mp3.config.bitrate // 1000).encode("ascii"))
    if icy:
        request.setHeader(b"icy-metaint", str(mp3.config.metaint).encode("ascii"))
    if request.method == b"HEAD":
        return b""
    Mp3Listener(request, mp3, max_backlog_bytes, on_drop, IcyInserter(mp3.config.metaint) if icy else None).start()
    return NOT_DONE_YET
