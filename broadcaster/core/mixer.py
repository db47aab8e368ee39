"""The channel mixer: sums its inputs each frame with click-free gain changes
and a limiter so the sum never clips.

Pure: no clock, no sockets. One ``mix()`` call is one frame. Every input
carries a priority class: at each frame the highest class that has audio
plays and lower ones are muted (``_target_gain``), which is how a live
studio takes over from a channel's idle programme and gives it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from broadcaster.codecs.pcm import Audio, db_to_gain
from broadcaster.core.sources import Source


class Priority(IntEnum):
    BACKGROUND = 10
    SCHEDULED = 20
    LIVE = 30
    ANNOUNCEMENT = 40
    EMERGENCY = 50


PRIORITY_NAMES: dict[str, Priority] = {
    "background": Priority.BACKGROUND, "scheduled": Priority.SCHEDULED, "live": Priority.LIVE,
    "announcement": Priority.ANNOUNCEMENT, "emergency": Priority.EMERGENCY,
    # The bulletin classes of Circular 39/2020/TT-BTTTT.
    "thong-thuong": Priority.SCHEDULED, "normal": Priority.SCHEDULED,
    "uu-tien": Priority.ANNOUNCEMENT, "priority": Priority.ANNOUNCEMENT,
    "khan-cap": Priority.EMERGENCY,
}


@dataclass(eq=False)
class MixerInput:
    """One thing playing on a channel.

    ``policy`` is what this item does to lower classes while it has audio:
    ``preempt`` mutes them, ``duck`` lowers them by ``duck_db``.
    ``on_preempt`` is what this item does when a higher class preempts it:
    ``continue`` (muted, it keeps running: a live studio, a relay),
    ``pause`` (it stops where it is and resumes there: a recorded programme)
    or ``skip`` (it ends)."""

    source: Source
    gain_db: float = 0.0
    priority: Priority = Priority.SCHEDULED
    policy: str = "preempt"
    duck_db: float = -20.0
    on_preempt: str = "continue"
    gain: float = 0.0  # the linear gain applied at the end of the last frame
    removing: bool = field(default=False)
    preempted: bool = False  # muted by a higher class in the last frame
    frames_played: int = 0  # frames in which the source gave audio (or was skipped with no consumers)
    owner: str | None = None  # the core's input id this belongs to
    ramp_at: int = 0  # in the next frame, the gain change starts at this sample (a frame-exact start or cut)
    on_end: Callable[[MixerInput, str], None] | None = None  # called once with "finished", "skipped" or "removed"


class Mixer:
    def __init__(self, frame_samples: int = 960, *, ramp_ms: float = 5.0,
                 ceiling_dbfs: float = -1.0, release_ms: float = 200.0) -> None:
        self.frame_samples = frame_samples
        ramp_samples = self._ramp_samples = max(1, int(48 * ramp_ms))
        # Fraction of a gain change applied at each sample of a frame: a linear
        # ramp that completes within ramp_ms (always inside one frame).
        self._ramp = np.minimum(np.arange(1, frame_samples + 1) / ramp_samples, 1.0).astype(np.float32)
        self.ceiling = db_to_gain(ceiling_dbfs)
        self._release_step = frame_samples / (48.0 * release_ms)
        self._limiter_gain = 1.0
        self.inputs: list[MixerInput] = []
        self.top: Priority | None = None  # the class that played in the last frame
        self.top_rose = False  # it is higher than the frame before's

    def add(self, source: Source, *, gain_db: float = 0.0, priority: Priority = Priority.SCHEDULED,
            fade_in: bool = True, policy: str = "preempt", duck_db: float = -20.0, on_preempt: str = "continue",
            on_end: Callable[[MixerInput, str], None] | None = None, ramp_at: int = 0) -> MixerInput:
        """``ramp_at``: the fade-in starts at this sample of the first frame (where the
        source's first sample is, after its lead-in silence)."""
        if policy not in ("preempt", "duck") or on_preempt not in ("continue", "pause", "skip"):
            raise ValueError(f"unknown policy {policy!r} or on_preempt {on_preempt!r}")
        item = MixerInput(source=source, gain_db=gain_db, priority=priority, policy=policy, duck_db=duck_db,
                          on_preempt=on_preempt, gain=0.0 if fade_in else db_to_gain(gain_db), on_end=on_end,
                          ramp_at=ramp_at)
        self.inputs.append(item)
        return item

    def remove(self, item: MixerInput, *, fade_out: bool = True, at: int = 0) -> None:
        """Fade an input out over the ramp, then drop it (an abrupt cut clicks).
        ``at``: the fade starts at this sample of the next frame (where what replaces it starts)."""
        if not fade_out or item.gain == 0.0:
            self._drop(item, "removed")
        else:
            item.removing = True
            item.ramp_at = at

    def _drop(self, item: MixerInput, how: str) -> None:
        if item in self.inputs:
            self.inputs.remove(item)
            if item.on_end is not None:
                item.on_end(item, how)

    def skip(self) -> None:
        """Advance every source one frame with no output (no consumers)."""
        for item in list(self.inputs):
            item.source.skip()
            item.ramp_at = 0
            item.frames_played += 1  # on air, though nobody listens: records and first-frame events count it
            if item.source.finished or item.removing:
                self._drop(item, "finished" if item.source.finished else "removed")

    def mix(self) -> Audio | None:
        """One frame: the highest class with audio plays (equal classes mix); what it
        does to lower classes is its policy. Every gain change ramps over ramp_ms."""
        if len(self.inputs) == 1:
            item = self.inputs[0]
            if not item.removing and item.ramp_at <= 0 and item.gain == db_to_gain(item.gain_db):
                return self._mix_steady(item)
        out: Audio | None = None
        top: Priority | None = None
        duck_gain = 1.0
        frames: list[tuple[MixerInput, Audio | None]] = []
        for item in sorted(self.inputs, key=lambda i: -i.priority):
            below = top is not None and item.priority < top
            if below and duck_gain == 0.0 and item.on_preempt != "continue" and not item.removing:
                if item.on_preempt == "skip":
                    item.removing = True
                elif item.gain == 0.0:
                    item.preempted = True
                    continue  # paused: not read, so it resumes where it stopped
            frame = item.source.read()
            if frame is not None:
                item.frames_played += 1
            frames.append((item, frame))
            if frame is not None and not item.removing and (top is None or item.priority == top):
                if top is None:
                    top, duck_gain = item.priority, 1.0
                # Among the top class, any preempting item preempts; else the deepest duck applies.
                duck_gain = min(duck_gain, 0.0 if item.policy == "preempt" else db_to_gain(item.duck_db))
        self.top_rose = top is not None and (self.top is None or top > self.top)
        self.top = top
        for item, frame in frames:
            preempted = top is not None and item.priority < top
            item.preempted = preempted
            target = 0.0 if item.removing else db_to_gain(item.gain_db) * (duck_gain if preempted else 1.0)
            reached = target
            if frame is not None:
                if item.gain == target:
                    contribution = frame if target == 1.0 else frame * np.float32(target)
                else:
                    ramp = self._ramp if item.ramp_at <= 0 else self._ramp_from(item.ramp_at)
                    gains = item.gain + (target - item.gain) * ramp
                    contribution = frame * gains
                    if item.ramp_at + self._ramp_samples > self.frame_samples:
                        reached = float(gains[-1])  # a ramp that started late in the frame goes on in the next
                out = contribution.astype(np.float32, copy=True) if out is None else out + contribution
            item.gain = reached
            item.ramp_at = 0
            if item.source.finished:
                self._drop(item, "finished")
            elif item.removing and item.gain == 0.0:
                self._drop(item, "skipped" if item.on_preempt == "skip" and preempted else "removed")
        if out is None:
            return None
        return self._limit(out)

    def _mix_steady(self, item: MixerInput) -> Audio | None:
        """The usual frame: one input, at its gain, nothing ramping. What mix() would do, with
        none of its bookkeeping (a third of a channel-frame's Python time beside libopus)."""
        frame = item.source.read()
        item.preempted = False
        if frame is None:
            self.top_rose, self.top = False, None
            if item.source.finished:
                self._drop(item, "finished")
            return None
        item.frames_played += 1
        self.top_rose = self.top is None or item.priority > self.top
        self.top = item.priority
        if item.gain != 1.0:
            frame = frame * np.float32(item.gain)
        if item.source.finished:
            self._drop(item, "finished")
        return self._limit(frame)

    def _ramp_from(self, start: int) -> Audio:
        """The ramp, starting at sample ``start`` (0 before it)."""
        ramp = np.zeros(self.frame_samples, dtype=np.float32)
        if start < self.frame_samples:
            ramp[start:] = self._ramp[:self.frame_samples - start]
        return ramp

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
