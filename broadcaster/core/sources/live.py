"""The jitter-buffered live source (see LiveSource)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from broadcaster.codecs.pcm import SAMPLE_RATE, Audio
from broadcaster.core.sources.base import Source, register


@dataclass
class LiveStats:
    underruns: int = 0   # ticks with too little audio, filled with silence
    overruns: int = 0    # samples dropped because the buffer was over its maximum
    stalls: int = 0      # times the studio went quiet long enough to fall back


class LiveSource:
    """The studio's audio as a mixer source, behind a jitter buffer.

    Playout starts once ``target_delay`` of audio is buffered. A short gap is
    an underrun: the source plays silence (the studio is still on air) until
    the buffer has refilled to a target 100 ms larger than before, up to the
    maximum, so the buffer grows to fit how the console actually sends; after
    ``stall_frames`` ticks without audio the source reports nothing, so the
    channel falls back to what it would otherwise play, and playout restarts
    at the target delay when audio comes back. The buffer never holds more
    than ``max_delay``: past it the oldest audio is dropped, which keeps a
    console that sends in bursts from drifting ever further behind live.
    """

    def __init__(self, *, frame_samples: int = 960, target_delay_s: float = 0.2, max_delay_s: float = 1.0,
                 stall_s: float = 2.0, name: str = "live") -> None:
        self.name = name
        self.frame_samples = frame_samples
        self.target = int(target_delay_s * SAMPLE_RATE)
        self.maximum = max(int(max_delay_s * SAMPLE_RATE), self.target + frame_samples)
        self.stall_frames = max(1, int(stall_s * SAMPLE_RATE / frame_samples))
        self.stats = LiveStats()
        self._chunks: deque[Audio] = deque()
        self._buffered = 0
        self._playing = False
        self._quiet_ticks = 0
        self._rebuffering = False
        self._closed = False

    @property
    def depth_s(self) -> float:
        return self._buffered / SAMPLE_RATE

    @property
    def on_air(self) -> bool:
        return self._playing

    @property
    def finished(self) -> bool:
        return self._closed and self._buffered < self.frame_samples

    def close(self) -> None:
        """The studio disconnected: play out what is buffered, then end."""
        self._closed = True

    def push(self, pcm: Audio) -> None:
        if pcm.size == 0:
            return
        self._chunks.append(pcm.astype(np.float32, copy=False))
        self._buffered += pcm.size
        excess = self._buffered - self.maximum
        if excess > 0:
            self.stats.overruns += excess
            self._drop(excess)

    def _drop(self, count: int) -> None:
        while count > 0 and self._chunks:
            head = self._chunks[0]
            if head.size <= count:
                self._chunks.popleft()
                self._buffered -= head.size
                count -= head.size
            else:
                self._chunks[0] = head[count:]
                self._buffered -= count
                count = 0

    def _take(self, count: int) -> Audio:
        out = np.empty(count, dtype=np.float32)
        filled = 0
        while filled < count:
            head = self._chunks[0]
            n = min(head.size, count - filled)
            out[filled:filled + n] = head[:n]
            filled += n
            if n == head.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = head[n:]
        self._buffered -= count
        return out

    def read(self) -> Audio | None:
        n = self.frame_samples
        if not self._playing:
            if self._buffered >= self.target or (self._closed and self._buffered >= n):
                self._playing, self._rebuffering, self._quiet_ticks = True, False, 0
            else:
                return None
        if self._rebuffering:
            if self._buffered >= self.target:
                self._rebuffering = False
            elif not self._closed:
                return self._silence_or_stall()
        if self._buffered >= n:
            self._quiet_ticks = 0
            return self._take(n)
        # Underrun: play what is left, then silence while the buffer refills to a
        # target 100 ms larger, so a console that sends in bursts (ffmpeg's Ogg
        # muxer writes one page a second) stops underrunning after a few pages.
        self.stats.underruns += 1
        self.target = min(self.target + int(0.1 * SAMPLE_RATE), self.maximum - n)
        self._rebuffering = True
        partial = self._take(self._buffered) if self._buffered else np.zeros(0, np.float32)
        self._quiet_ticks = 1
        if self._closed:
            self._playing = False
            return np.concatenate([partial, np.zeros(n - partial.size, np.float32)]) if partial.size else None
        return np.concatenate([partial, np.zeros(n - partial.size, np.float32)])

    def _silence_or_stall(self) -> Audio | None:
        self._quiet_ticks += 1
        if self._quiet_ticks >= self.stall_frames:
            self.stats.stalls += 1
            self._playing = self._rebuffering = False
            return None  # the studio is gone quiet: the channel falls back
        return np.zeros(self.frame_samples, dtype=np.float32)

    def skip(self) -> None:
        if self._buffered >= self.frame_samples:
            self._take(self.frame_samples)


@dataclass(frozen=True)
class LiveSpec:
    target_delay_s: float
    max_delay_s: float
    stall_s: float
    name: str = "live"


@register(LiveSpec)
def build(spec: LiveSpec, frame_samples: int) -> Source:
    return LiveSource(frame_samples=frame_samples, target_delay_s=spec.target_delay_s,
                      max_delay_s=spec.max_delay_s, stall_s=spec.stall_s, name=spec.name)
