"""A relay's playout buffer: upstream audio in as it comes, out at the audio clock's rate.

Pure (the caller says how many samples are due). HLS delivers audio a
segment (2–10 s) at a time, an Icecast upstream sends a burst on connect: the
core's live source wants a steady stream, as from a studio. So the relay
buffers, starts once ``prime_s`` is in, keeps at most ``max_s`` (the oldest
audio goes first: an upstream that catches up after a stall, or a clock a
little faster than ours, must not drift the relay behind live), and after
running dry waits to be primed again rather than playing in crumbs.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from broadcaster.codecs.pcm import SAMPLE_RATE, Audio


class Pacer:
    def __init__(self, prime_s: float, max_s: float) -> None:
        self.prime = int(prime_s * SAMPLE_RATE)
        self.maximum = max(int(max_s * SAMPLE_RATE), self.prime + SAMPLE_RATE)
        self._chunks: deque[Audio] = deque()
        self.buffered = 0
        self.playing = False
        self.dropped = 0  # samples dropped over the maximum
        self.underruns = 0

    @property
    def depth_s(self) -> float:
        return self.buffered / SAMPLE_RATE

    def push(self, pcm: Audio) -> None:
        if not pcm.size:
            return
        self._chunks.append(pcm)
        self.buffered += pcm.size
        excess = self.buffered - self.maximum
        if excess > 0:
            # Drop down to half-way between prime and maximum, not to the maximum, so a steady
            # surplus drops a second now and then instead of a few samples every chunk.
            target = (self.prime + self.maximum) // 2
            self._drop(self.buffered - target)

    def clear(self) -> None:
        self._chunks.clear()
        self.buffered = 0
        self.playing = False

    def take(self, count: int) -> Audio | None:
        """``count`` samples due now, or None: not primed yet, or just ran dry."""
        if not self.playing:
            if self.buffered < self.prime or self.buffered < count:
                return None
            self.playing = True
        if self.buffered < count:
            self.underruns += 1
            self.playing = False
            return None
        parts: list[Audio] = []
        need = count
        while need:
            chunk = self._chunks[0]
            if chunk.size <= need:
                parts.append(self._chunks.popleft())
                need -= chunk.size
            else:
                parts.append(chunk[:need])
                self._chunks[0] = chunk[need:]
                need = 0
        self.buffered -= count
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _drop(self, count: int) -> None:
        self.dropped += count
        self.buffered -= count
        while count:
            chunk = self._chunks[0]
            if chunk.size <= count:
                self._chunks.popleft()
                count -= chunk.size
            else:
                self._chunks[0] = chunk[count:]
                count = 0
