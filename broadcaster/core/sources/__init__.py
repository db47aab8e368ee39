"""Sources: anything that yields exactly one 48 kHz mono float32 frame per tick.

A source returns ``None`` when it has nothing to play this tick (a finished
programme, a studio that has not sent enough audio yet); the mixer then
treats it as silent. Sources never see the wall clock: one ``read`` is one
frame of media time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from broadcaster.codecs.audiofile import load_audio
from broadcaster.codecs.pcm import SAMPLE_RATE, Audio, db_to_gain


class Source(Protocol):
    name: str

    def read(self) -> Audio | None:
        """The next frame, or None if the source has nothing this tick."""

    def skip(self) -> None:
        """Advance one frame without producing audio (nobody is listening)."""

    @property
    def finished(self) -> bool:
        """True once the source will never produce audio again."""


class ToneSource:
    """A sine tone: test signals now, alert attention tones later."""

    def __init__(self, frequency_hz: float, level_dbfs: float = -12.0, *,
                 frame_samples: int = 960, duration_s: float | None = None,
                 name: str = "tone") -> None:
        self.name = name
        self.frequency_hz = frequency_hz
        self.frame_samples = frame_samples
        self._amplitude = db_to_gain(level_dbfs) * np.sqrt(2.0)  # RMS level of a sine
        self._phase_step = 2.0 * np.pi * frequency_hz / SAMPLE_RATE
        self._n = np.arange(frame_samples, dtype=np.float64)
        self._position = 0  # samples produced so far
        self._total = None if duration_s is None else int(round(duration_s * SAMPLE_RATE))

    @property
    def finished(self) -> bool:
        return self._total is not None and self._position >= self._total

    def read(self) -> Audio | None:
        if self.finished:
            return None
        phase = (self._position + self._n) * self._phase_step
        frame = (self._amplitude * np.sin(phase)).astype(np.float32)
        if self._total is not None and self._position + self.frame_samples > self._total:
            frame[self._total - self._position:] = 0.0
        self._position += self.frame_samples
        return frame

    def skip(self) -> None:
        self._position += self.frame_samples


class BufferSource:
    """Decoded audio played once or looped, frame by frame.

    The programme is decoded and resampled once when it is loaded; the
    source only slices it (no copy), so one decoded programme can play on
    many channels at once.
    """

    def __init__(self, audio: Audio, *, frame_samples: int = 960, loop: bool = False,
                 name: str = "buffer", start_s: float = 0.0, length_s: float | None = None) -> None:
        """start_s/length_s play a part of the audio: a programme joined late,
        or cut at the end of its scheduled slot."""
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError("audio must be a non-empty 1-D array")
        self.name = name
        self.loop = loop
        self.frame_samples = frame_samples
        self._audio = audio if audio.dtype == np.float32 else audio.astype(np.float32)
        self._end = self._audio.size if length_s is None else min(self._audio.size, int(length_s * SAMPLE_RATE))
        self._position = 0 if loop else min(self._end, max(0, int(start_s * SAMPLE_RATE)))

    @classmethod
    def from_file(cls, path: str | Path, *, frame_samples: int = 960, loop: bool = False) -> BufferSource:
        return cls(load_audio(path), frame_samples=frame_samples, loop=loop, name=Path(path).name)

    @property
    def duration_s(self) -> float:
        return self._end / SAMPLE_RATE

    @property
    def finished(self) -> bool:
        return not self.loop and self._position >= self._end

    def read(self) -> Audio | None:
        if self.finished:
            return None
        start, n = self._position, self.frame_samples
        self.skip()
        if start + n <= self._end:
            return self._audio[start:start + n]
        tail = self._audio[start:self._end]
        head = self._audio[:n - tail.size] if self.loop else np.zeros(n - tail.size, dtype=np.float32)
        if head.size < n - tail.size:  # a loop shorter than one frame
            head = np.resize(self._audio[:self._end], n - tail.size)
        return np.concatenate([tail, head])

    def skip(self) -> None:
        self._position += self.frame_samples
        if self.loop and self._position >= self._end:
            self._position = (self._position - self._end) % max(1, self._end)
