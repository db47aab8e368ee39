"""The jitter-buffered live source (see LiveSource)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from broadcaster.codecs.pcm import SAMPLE_RATE, Audio
from broadcaster.core.sources.base import Source, register

WINDOW_S = 2.0          # the buffer's lowest level over this long is what it holds beyond need
RESERVE_S = 0.06        # kept above that lowest level: scheduling jitter at both ends
QUIET_DBFS = -45.0      # a frame this quiet (RMS) is a pause: dropping it only shortens the pause
FORCE_AFTER_S = 8.0     # surplus with no pause for this long (music): frames skipped with a crossfade
FORCE_EVERY_S = 0.5     # then one frame every this often
CROSSFADE_S = 0.005


@dataclass
class LiveStats:
    underruns: int = 0   # ticks with too little audio, filled with silence
    overruns: int = 0    # samples dropped because the buffer was over its maximum
    stalls: int = 0      # times the studio went quiet long enough to fall back
    shed: int = 0        # samples dropped to catch up with live after a burst (pauses first)


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

    A burst (a console connecting with seconds buffered, a network stall
    catching up) would otherwise stay as delay for the rest of the session,
    since audio leaves exactly as fast as it comes. So the source watches the
    buffer's lowest level over each WINDOW_S: whatever it never needed beyond
    RESERVE_S (grown by each underrun) is surplus, and it is shed from pauses,
    dropping whole frames quieter than QUIET_DBFS (a pause between words
    gets shorter; speech is never sped up or pitch-shifted). Audio with no
    pause for FORCE_AFTER_S (music) loses one frame every FORCE_EVERY_S, with
    a 5 ms crossfade, until it has caught up.
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
        self.reserve = int(RESERVE_S * SAMPLE_RATE)
        self._window_frames = max(1, int(WINDOW_S * SAMPLE_RATE / frame_samples))
        self._window_left = self._window_frames
        self._window_min = self.maximum
        self._shed = 0  # samples still to shed
        self._unpaused = 0  # frames played while shedding, with no pause to take it from
        self._force_after = int(FORCE_AFTER_S * SAMPLE_RATE / frame_samples)
        self._force_every = max(1, int(FORCE_EVERY_S * SAMPLE_RATE / frame_samples))
        self._quiet_energy = frame_samples * 10.0 ** (QUIET_DBFS / 10.0)
        ramp = min(frame_samples, int(CROSSFADE_S * SAMPLE_RATE))
        self._fade_in = (np.arange(1, ramp + 1) / (ramp + 1)).astype(np.float32)

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
            self._watch()
            if self._shed >= n and self._buffered >= 2 * n:
                return self._catch_up()
            return self._take(n)
        # Underrun: play what is left, then silence while the buffer refills to a
        # target 100 ms larger, so a console that sends in bursts (ffmpeg's Ogg
        # muxer writes one page a second) stops underrunning after a few pages.
        self.stats.underruns += 1
        self.target = min(self.target + int(0.1 * SAMPLE_RATE), self.maximum - n)
        self.reserve = min(self.reserve + int(0.1 * SAMPLE_RATE), self.maximum // 2)
        self._shed, self._unpaused = 0, 0
        self._window_left, self._window_min = self._window_frames, self.maximum
        self._rebuffering = True
        partial = self._take(self._buffered) if self._buffered else np.zeros(0, np.float32)
        self._quiet_ticks = 1
        if self._closed:
            self._playing = False
            return np.concatenate([partial, np.zeros(n - partial.size, np.float32)]) if partial.size else None
        return np.concatenate([partial, np.zeros(n - partial.size, np.float32)])

    def _watch(self) -> None:
        """The lowest level before a frame is taken, over each window: what was never needed."""
        self._window_min = min(self._window_min, self._buffered)
        self._window_left -= 1
        if self._window_left == 0:
            self._shed = max(0, self._window_min - self.frame_samples - self.reserve)
            self._window_left, self._window_min = self._window_frames, self.maximum

    def _catch_up(self) -> Audio:
        """The next frame to play while shedding surplus (at least two frames are buffered)."""
        n = self.frame_samples
        frame = self._take(n)
        if float(np.dot(frame, frame)) < self._quiet_energy:
            self._drop_shed(n)
            self._unpaused = 0
            return self._take(n)
        self._unpaused += 1
        if self._unpaused >= self._force_after and (self._unpaused - self._force_after) % self._force_every == 0:
            after = self._take(n)
            ramp = self._fade_in.size
            after[:ramp] = frame[:ramp] * (1.0 - self._fade_in) + after[:ramp] * self._fade_in
            self._drop_shed(n)
            return after
        return frame

    def _drop_shed(self, count: int) -> None:
        self._shed -= count
        self.stats.shed += count
        if self._shed < self.frame_samples:
            self._unpaused = 0

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
