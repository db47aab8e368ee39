"""HLS of each public channel, for phones (iOS Safari cannot play Ogg/Opus) and for any CDN.

AAC-LC in MPEG-TS segments (or fMP4, ``hls.container``), encoded once per channel and only while someone
asks for it: the first playlist request starts the channel's encoder (a Tap on
its Ogg pages, control/transcode.py), and it stops ``hls.idle_s`` after the
last playlist or segment request. Segment names carry a random session and a
sequence that starts from the wall clock, so a name is never reused (not after
an idle stop, not after a restart) and a cache in front may keep a segment as
long as it likes; the playlist itself must not be cached (site.py sets the
headers). A request on a cold channel waits, without blocking anything, until
the first segment exists or ``hls.first_segment_wait_s`` has passed.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from broadcaster import metrics
from broadcaster.codecs.encoders import SAMPLE_RATE, AacEncoder
from broadcaster.codecs.fmp4 import Fmp4Writer, init_segment
from broadcaster.codecs.mpegts import TsWriter
from broadcaster.config import HlsConfig
from broadcaster.control.transcode import OpusPages, Runner, Tap

CONTENT_TYPES = {"ts": "video/mp2t", "m4s": "video/mp4", "mp4": "video/mp4"}  # by file extension
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
KEEP_EXTRA = 6  # segments still served after they leave the playlist (a player or CDN a little behind)


@dataclass(frozen=True)
class Segment:
    sequence: int
    name: str
    duration_s: float
    data: bytes


class HlsWindow:
    """The rolling live window: the last ``window`` segments listed, a few more kept. Pure."""

    def __init__(self, segment_s: int, window: int, first_sequence: int, session: str,
                 init: bytes | None = None) -> None:
        """``init``: the fMP4 initialisation segment (then segments are .m4s); None for MPEG-TS."""
        self.segment_s = segment_s
        self.window = window
        self.session = session
        self.next_sequence = first_sequence
        self.extension = "ts" if init is None else "m4s"
        self._segments: deque[Segment] = deque(maxlen=window + KEEP_EXTRA)
        self._by_name: dict[str, Segment] = {}
        self.init = None if init is None else Segment(-1, f"{session}-init.mp4", 0.0, init)

    def add(self, duration_s: float, data: bytes) -> Segment:
        name = f"{self.session}-{self.next_sequence}.{self.extension}"
        segment = Segment(self.next_sequence, name, duration_s, data)
        self.next_sequence += 1
        if len(self._segments) == self._segments.maxlen:
            self._by_name.pop(self._segments[0].name, None)
        self._segments.append(segment)
        self._by_name[segment.name] = segment
        return segment

    def get(self, name: str) -> Segment | None:
        if self.init is not None and name == self.init.name:
            return self.init
        return self._by_name.get(name)

    @property
    def ready(self) -> bool:
        return bool(self._segments)

    def playlist(self, prefix: str = "") -> str:
        """The live media playlist (RFC 8216); ``prefix`` is prepended to segment names, so the
        same window serves /channels/{id}/hls/index.m3u8 and the aliases elsewhere."""
        listed = list(self._segments)[-self.window:]
        target = max([self.segment_s] + [int(s.duration_s + 0.5) for s in listed])
        lines = ["#EXTM3U", f"#EXT-X-VERSION:{3 if self.init is None else 7}", f"#EXT-X-TARGETDURATION:{target}",
                 f"#EXT-X-MEDIA-SEQUENCE:{listed[0].sequence if listed else self.next_sequence}"]
        if self.init is not None:
            lines.append(f'#EXT-X-MAP:URI="{prefix}{self.init.name}"')
        for segment in listed:
            lines += [f"#EXTINF:{segment.duration_s:.3f},", prefix + segment.name]
        return "\n".join(lines) + "\n"


class Segmenter:
    """Ogg pages in, MPEG-TS (or fMP4) segments out: Opus decoded, AAC encoded, cut every
    ``segment_s`` seconds at an AAC frame boundary. Lives on the transcode thread."""

    def __init__(self, segment_s: int, bitrate: int, container: str = "ts") -> None:
        self._pcm = OpusPages()
        self._aac = AacEncoder(bitrate)
        self._ts: TsWriter | Fmp4Writer = (TsWriter(SAMPLE_RATE, self._aac.frame_samples) if container == "ts"
                                           else Fmp4Writer(self._aac.frame_samples))
        self._adts = container == "ts"  # fMP4 carries raw AAC frames: the 7-byte ADTS header goes
        self._frames: list[bytes] = []
        self._per_segment = round(segment_s * SAMPLE_RATE / self._aac.frame_samples)
        self._first_sample = 0

    def feed(self, pages: bytes) -> list[tuple[float, bytes]]:
        frames = self._aac.encode(self._pcm.decode(pages))
        self._frames += frames if self._adts else [frame[7:] for frame in frames]
        out = []
        while len(self._frames) >= self._per_segment:
            frames, self._frames = self._frames[:self._per_segment], self._frames[self._per_segment:]
            samples = len(frames) * self._aac.frame_samples
            out.append((samples / SAMPLE_RATE, self._ts.segment(frames, self._first_sample)))
            self._first_sample += samples
        return out


class HlsChannel:
    """One channel's HLS: its encoder while wanted, its window, and the requests waiting for it."""

    def __init__(self, channel: Any, config: HlsConfig, run: Runner, clock: Any, wall: Callable[[], float]) -> None:
        self.channel = channel
        self.config = config
        self._run = run
        self._clock = clock
        self._wall = wall
        self.window: HlsWindow | None = None
        self.last_request = 0.0
        self._tap: Tap[list[tuple[float, bytes]]] | None = None
        self._waiting: list[Deferred[HlsWindow | None]] = []
        self._segments = metrics.hls_segments_total.labels(channel.id)

    @property
    def running(self) -> bool:
        return self._tap is not None

    def touch(self) -> None:
        """A playlist or segment was asked for: keep the encoder, or start it."""
        self.last_request = self._clock.seconds()
        if self._tap is None:
            self.start()

    def start(self) -> None:
        segment_s, container = self.config.segment_s, self.config.container
        init = init_segment(SAMPLE_RATE, 1, self.config.bitrate) if container == "fmp4" else None
        self.window = HlsWindow(segment_s, self.config.window, int(self._wall() // segment_s), secrets.token_hex(4),
                                init)
        segmenter = Segmenter(segment_s, self.config.bitrate, container)
        self._tap = Tap(self.channel, "hls", segmenter.feed, self._made, self._run)
        self._tap.start()

    def stop(self) -> None:
        if self._tap is not None:
            self._tap.stop()
            self._tap = None
        self.window = None
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)

    def segment(self, name: str) -> Segment | None:
        """A segment still kept, if the encoder runs; asking for one keeps the encoder running
        (a CDN fetching segments counts as a listener) but never starts it."""
        found = self.window.get(name) if self.window is not None else None
        if found is not None:
            self.last_request = self._clock.seconds()
        return found

    def idle(self, now: float) -> bool:
        """Nobody asked for ``idle_s`` (a request still waiting for the first segment is asking)."""
        return self.running and not self._waiting and now - self.last_request >= self.config.idle_s

    def _made(self, segments: list[tuple[float, bytes]]) -> None:
        if self.window is None:
            return
        for duration_s, data in segments:
            self.window.add(duration_s, data)
            self._segments.inc()
        if self.window.ready and self._waiting:
            self.last_request = self._clock.seconds()  # they are answered now: idle from here
            waiting, self._waiting = self._waiting, []
            for waiter in waiting:
                waiter.callback(self.window)

    def ready_window(self) -> Deferred[HlsWindow | None]:
        """The window once it has a segment: at once if it has, else after the first one is
        made, or None after ``first_segment_wait_s``."""
        self.touch()
        waiter: Deferred[HlsWindow | None] = Deferred()
        if self.window is not None and self.window.ready:
            waiter.callback(self.window)
            return waiter
        self._waiting.append(waiter)

        def give_up() -> None:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
                waiter.callback(None)

        timer = self._clock.callLater(self.config.first_segment_wait_s, give_up)

        def answered(window: HlsWindow | None) -> HlsWindow | None:
            if timer.active():
                timer.cancel()
            return window

        return waiter.addCallback(answered)


class HlsDesk:
    """Every channel's HLS, and the once-a-second check that stops idle encoders."""

    def __init__(self, config: HlsConfig, run: Runner, clock: Any, wall: Callable[[], float]) -> None:
        self.config = config
        self._run = run
        self._clock = clock
        self._wall = wall
        self.channels: dict[str, HlsChannel] = {}
        self._check = LoopingCall(self.stop_idle)
        self._check.clock = clock

    def of(self, channel: Any) -> HlsChannel:
        hls = self.channels.get(channel.id)
        if hls is None:
            hls = self.channels[channel.id] = HlsChannel(channel, self.config, self._run, self._clock, self._wall)
            if not self._check.running:
                self._check.start(1.0, now=False)
        return hls

    def stop_idle(self) -> None:
        now = self._clock.seconds()
        for hls in self.channels.values():
            if hls.idle(now):
                hls.stop()

    def stop(self) -> None:
        if self._check.running:
            self._check.stop()
        for hls in self.channels.values():
            hls.stop()
