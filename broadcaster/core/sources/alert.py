"""The alert source: attention signal, then the message, repeated with a gap.

The attention signal is made here, so an alert starts in the frame after it
is accepted; the message (speech or an uploaded file, made by control in a
worker) joins when it is ready, and until then the source plays silence,
holding the channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from broadcaster.codecs.pcm import SAMPLE_RATE, Audio
from broadcaster.codecs.shared import SharedPcm, attach
from broadcaster.core.sources.base import Source, register


@dataclass(frozen=True)
class AlertSpec:
    repeat: int
    gap_s: float
    message: SharedPcm | None = None  # given at once (a stored file), or later by SetMessage
    name: str = "alert"


def two_tone(seconds: float = 2.4, level: float = 0.4) -> Audio:
    """The attention signal: alternating 960/640 Hz, 0.3 s each, with short fades."""
    half = int(0.3 * SAMPLE_RATE)
    t = np.arange(half) / SAMPLE_RATE
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
    pieces = [level * fade * np.sin(2 * np.pi * f * t) for f in (960.0, 640.0)]
    cycle = np.concatenate(pieces)
    repeats = max(1, int(round(seconds / 0.6)))
    return np.concatenate([np.tile(cycle, repeats), np.zeros(int(0.5 * SAMPLE_RATE))]).astype(np.float32)


class AlertSource:
    """attention → message, repeated, with a gap between repeats. While the
    message is not ready yet the source plays silence, holding the channel."""

    def __init__(self, attention: Audio, *, repeat: int, gap_s: float, frame_samples: int = 960,
                 name: str = "alert") -> None:
        self.name = name
        self.frame_samples = frame_samples
        self.attention = attention
        self.message: Audio | None = None
        self.failed = False
        self.repeat = repeat
        self.gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
        self.frames_read = 0
        self.plays_done = 0
        self._queue: list[Audio] = [attention]
        self._current = np.zeros(0, dtype=np.float32)

    def set_message(self, audio: Audio | None) -> None:
        """The message is ready (None: it could not be made; the attention signal stands alone)."""
        self.message = audio
        self.failed = audio is None

    @property
    def finished(self) -> bool:
        return self.plays_done >= self.repeat and not self._current.size and not self._queue

    def _next_segment(self) -> Audio | None:
        """attention, message, gap, attention, message, ... (repeat messages)."""
        if self._queue:
            return self._queue.pop(0)
        if self.failed:
            self.plays_done = self.repeat  # nothing to say beyond the attention signal
            return None
        if self.message is None or self.plays_done >= self.repeat:
            return None  # still synthesising (hold the channel), or done
        self.plays_done += 1
        if self.plays_done < self.repeat:
            self._queue = [self.gap, self.attention]
        return self.message

    def read(self) -> Audio | None:
        if self.finished:
            return None
        out = np.zeros(self.frame_samples, dtype=np.float32)
        filled = 0
        while filled < self.frame_samples:
            if not self._current.size:
                segment = self._next_segment()
                if segment is None:
                    break
                self._current = segment
            n = min(self.frame_samples - filled, self._current.size)
            out[filled:filled + n] = self._current[:n]
            self._current = self._current[n:]
            filled += n
        self.frames_read += 1
        return out

    def skip(self) -> None:
        self.read()


@lru_cache(maxsize=1)
def _attention() -> Audio:
    return two_tone()


@register(AlertSpec)
def build(spec: AlertSpec, frame_samples: int) -> Source:
    source = AlertSource(_attention(), repeat=spec.repeat, gap_s=spec.gap_s, frame_samples=frame_samples,
                         name=spec.name)
    if spec.message is not None:
        source.set_message(attach(spec.message))
    return source
