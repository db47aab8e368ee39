"""The channel mixer: sums its inputs each frame with click-free gain changes
and a limiter so the sum never clips.

Pure: no clock, no sockets. One ``mix()`` call is one frame. Every input
carries a priority class: at each frame the highest class that has audio
plays and lower ones are muted (``_target_gain``), which is how a live
studio takes over from a channel's idle programme and gives it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from broadcaster.codecs.pcm import Audio, db_to_gain
from broadcaster.sources import Source


class Priority(IntEnum):
    BACKGROUND = 10
    SCHEDULED = 20
    LIVE = 30
    ANNOUNCEMENT = 40
    EMERGENCY = 50


@dataclass(eq=False)
class MixerInput:
    source: Source
    gain_db: float = 0.0
    priority: Priority = Priority.SCHEDULED
    gain: float = 0.0  # the linear gain applied at the end of the last frame
    removing: bool = field(default=False)


class Mixer:
    def __init__(self, frame_samples: int = 960, *, ramp_ms: float = 5.0,
                 ceiling_dbfs: float = -1.0, release_ms: float = 200.0) -> None:
        self.frame_samples = frame_samples
        ramp_samples = max(1, int(48 * ramp_ms))
        # Fraction of a gain change applied at each sample of a frame: a linear
        # ramp that completes within ramp_ms (always inside one frame).
        self._ramp = np.minimum(np.arange(1, frame_samples + 1) / ramp_samples, 1.0).astype(np.float32)
        self.ceiling = db_to_gain(ceiling_dbfs)
        self._release_step = frame_samples / (48.0 * release_ms)
        self._limiter_gain = 1.0
        self.inputs: list[MixerInput] = []

    def add(self, source: Source, *, gain_db: float = 0.0,
            priority: Priority = Priority.SCHEDULED, fade_in: bool = True) -> MixerInput:
        item = MixerInput(source=source, gain_db=gain_db, priority=priority,
                          gain=0.0 if fade_in else db_to_gain(gain_db))
        self.inputs.append(item)
        return item

    def remove(self, item: MixerInput, *, fade_out: bool = True) -> None:
        """Fade an input out over the ramp, then drop it (an abrupt cut clicks)."""
        if not fade_out or item.gain == 0.0:
            if item in self.inputs:
                self.inputs.remove(item)
        else:
            item.removing = True

    @property
    def active(self) -> bool:
        return any(not i.source.finished for i in self.inputs)

    def _target_gain(self, item: MixerInput, top: Priority | None) -> float:
        """The highest class with audio this frame plays; lower classes are muted
        (ramped, so the switch never clicks). Duck policies refine this later."""
        if item.removing or (top is not None and item.priority < top):
            return 0.0
        return db_to_gain(item.gain_db)

    def skip(self) -> None:
        """Advance every source one frame with no output (no consumers)."""
        for item in list(self.inputs):
            item.source.skip()
            if item.source.finished or item.removing:
                self.inputs.remove(item)

    def mix(self) -> Audio | None:
        """One frame of the sum, or None when no input produced audio."""
        out: Audio | None = None
        frames = [(item, item.source.read()) for item in list(self.inputs)]
        top = max((item.priority for item, frame in frames if frame is not None and not item.removing), default=None)
        for item, frame in frames:
            target = self._target_gain(item, top)
            if frame is not None:
                if item.gain == target:
                    contribution = frame if target == 1.0 else frame * np.float32(target)
                else:
                    gains = item.gain + (target - item.gain) * self._ramp
                    contribution = frame * gains
                out = contribution.astype(np.float32, copy=True) if out is None else out + contribution
            item.gain = target
            if item.source.finished or (item.removing and item.gain == 0.0):
                self.inputs.remove(item)
        if out is None:
            return None
        return self._limit(out)

    def _limit(self, frame: Audio) -> Audio:
        """Peak limiter: instant attack, linear release; never a sample above the ceiling."""
        magnitude = np.abs(frame)
        peak = float(magnitude.max())
        if peak <= self.ceiling and self._limiter_gain >= 1.0:
            return frame
        wanted = min(1.0, self.ceiling / peak) if peak > 0 else 1.0
        start = self._limiter_gain
        end = wanted if wanted < start else min(wanted, start + self._release_step)
        gains = start + (end - start) * self._ramp
        with np.errstate(divide="ignore"):
            gains = np.minimum(gains, self.ceiling / np.maximum(magnitude, 1e-12))
        self._limiter_gain = end
        return (frame * gains).astype(np.float32)
