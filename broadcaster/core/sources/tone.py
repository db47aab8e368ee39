"""A sine tone: test signals and line-up tones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from broadcaster.codecs.pcm import SAMPLE_RATE, Audio, db_to_gain
from broadcaster.core.sources.base import Source, register


@dataclass(frozen=True)
class ToneSpec:
    frequency_hz: float
    level_dbfs: float = -12.0
    duration_s: float | None = None
    name: str = "tone"


class ToneSource:
    """A sine tone at an RMS level (line-up and test signals)."""

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


@register(ToneSpec)
def build(spec: ToneSpec, frame_samples: int) -> Source:
    return ToneSource(spec.frequency_hz, spec.level_dbfs, frame_samples=frame_samples,
                      duration_s=spec.duration_s, name=spec.name)
