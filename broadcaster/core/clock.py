"""FrameClock: the one tick source that decides audio time for every channel.

Pure: it is told the time and answers which ticks are due, so it runs the
same under the core's own loop, a test's fake clock, or anything else.

Deadlines are computed from a fixed start (``start + n * frame_s``), never by
adding the frame length to "now", so lateness in one tick never accumulates as
drift. A late loop runs the missed ticks back to back (up to ``max_catchup``)
so that media time keeps pace with wall time; beyond that the ticks are
skipped and counted, because sending seconds of stale audio in a burst would
overflow every loudspeaker's jitter buffer.

Frame ``n`` covers the media interval ``[deadline(n), deadline(n + 1))``: an
item due at time ``t`` starts in frame ``frame_of(t)``, ``t - deadline(n)``
seconds into it.
"""

from __future__ import annotations

import math

from broadcaster import metrics


class FrameClock:
    def __init__(self, frame_s: float, max_catchup: int = 5) -> None:
        if frame_s <= 0:
            raise ValueError("frame_s must be positive")
        self.frame_s = frame_s
        self.max_catchup = max_catchup
        self.tick_index = 0  # the next tick to run
        self.missed = 0
        self._start = 0.0
        self.started = False

    def start(self, now: float) -> None:
        self._start = now
        self.tick_index = 0
        self.started = True

    def deadline(self, tick: int) -> float:
        return self._start + tick * self.frame_s

    @property
    def next_deadline(self) -> float:
        return self.deadline(self.tick_index)

    def frame_of(self, t: float) -> int:
        """The tick whose frame covers time t."""
        return math.floor((t - self._start) / self.frame_s + 1e-9)

    def due(self, now: float) -> list[tuple[int, float]]:
        """The ticks to run now, as (tick, deadline), oldest first. Ticks beyond
        the catch-up limit are skipped: counted in ``missed``, never returned."""
        if not self.started or now + 1e-9 < self.next_deadline:
            return []
        due = int((now - self._start) / self.frame_s + 1e-9) + 1 - self.tick_index
        if due > self.max_catchup:
            skipped = due - self.max_catchup
            self.missed += skipped
            metrics.ticks_missed_total.inc(skipped)
            self.tick_index += skipped
            due = self.max_catchup
        ticks = []
        for _ in range(due):
            deadline = self.deadline(self.tick_index)
            metrics.tick_lateness_seconds.observe(max(0.0, now - deadline))
            ticks.append((self.tick_index, deadline))
            self.tick_index += 1
        return ticks
