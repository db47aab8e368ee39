"""Decoded audio (a programme, a loop, a message) played once or looped."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from broadcaster.codecs.pcm import SAMPLE_RATE, Audio
from broadcaster.codecs.shared import SharedPcm, attach
from broadcaster.core.sources.base import Source, register


@dataclass(frozen=True)
class PcmSpec:
    """``start_s``/``length_s`` play a part (a programme joined late, or cut at the
    end of its slot); ``lead_s`` of silence first puts the first sample exactly
    where it is due inside its frame."""

    pcm: SharedPcm
    name: str = "programme"
    loop: bool = False
    start_s: float = 0.0
    length_s: float | None = None
    lead_s: float = 0.0


class BufferSource:
    """Decoded audio played once or looped, frame by frame.

    The programme is decoded and resampled once when it is loaded; the
    source only slices it (no copy), so one decoded programme can play on
    many channels at once.
    """

    def __init__(self, audio: Audio, *, frame_samples: int = 960, loop: bool = False,
                 name: str = "buffer", start_s: float = 0.0, length_s: float | None = None,
                 lead_s: float = 0.0) -> None:
        """start_s/length_s play a part of the audio: a programme joined late,
        or cut at the end of its scheduled slot. lead_s of silence come first."""
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError("audio must be a non-empty 1-D array")
        self.name = name
        self.loop = loop
        self.frame_samples = frame_samples
        self._audio = audio if audio.dtype == np.float32 else audio.astype(np.float32)
        self._end = self._audio.size if length_s is None else min(self._audio.size, int(length_s * SAMPLE_RATE))
        self._position = 0 if loop else min(self._end, max(0, int(start_s * SAMPLE_RATE)))
        self._lead = max(0, int(round(lead_s * SAMPLE_RATE)))

    @property
    def duration_s(self) -> float:
        return self._end / SAMPLE_RATE

    @property
    def finished(self) -> bool:
        return not self.loop and self._position >= self._end

    def read(self) -> Audio | None:
        if self.finished:
            return None
        if self._lead:
            lead = min(self._lead, self.frame_samples)
            self._lead -= lead
            frame = np.zeros(self.frame_samples, dtype=np.float32)
            rest = self.frame_samples - lead
            if rest:
                frame[lead:] = self._take(rest)
            return frame
        return self._take(self.frame_samples)

    def _take(self, n: int) -> Audio:
        start = self._position
        self._advance(n)
        if start + n <= self._end:
            return self._audio[start:start + n]
        tail = self._audio[start:self._end]
        head = self._audio[:n - tail.size] if self.loop else np.zeros(n - tail.size, dtype=np.float32)
        if head.size < n - tail.size:  # a loop shorter than one frame
            head = np.resize(self._audio[:self._end], n - tail.size)
        return np.concatenate([tail, head])

    def skip(self) -> None:
        lead = min(self._lead, self.frame_samples)
        self._lead -= lead
        self._advance(self.frame_samples - lead)

    def _advance(self, n: int) -> None:
        self._position += n
        if self.loop and self._position >= self._end:
            self._position = (self._position - self._end) % max(1, self._end)


@register(PcmSpec)
def build(spec: PcmSpec, frame_samples: int) -> Source:
    return BufferSource(attach(spec.pcm), frame_samples=frame_samples, loop=spec.loop, name=spec.name,
                        start_s=spec.start_s, length_s=spec.length_s, lead_s=spec.lead_s)
