"""Integrated loudness (ITU-R BS.1770-4 / EBU R128) of mono audio, measured as a stream.

Why not pyloudnorm's ``integrated_loudness`` on the whole signal: it copies
the signal and filters it in float64, several full-length arrays at once, so
an hour-long upload peaked at about 4 GB. Here the K-weighting filters (the
same coefficients pyloudnorm uses) carry their state from block to block and
only the energy of each 100 ms hop is kept: memory is one block, whatever
the length, and the result is pyloudnorm's to within rounding.

Gating as BS.1770-4: 400 ms blocks every 100 ms, an absolute gate at
-70 LUFS, then a relative gate 10 LU below the loudness of the blocks that
passed it. -inf when no block passes.
"""

from __future__ import annotations

import numpy as np
import pyloudnorm
from scipy.signal import lfilter

BLOCK_HOPS = 4  # a 400 ms gating block is four 100 ms hops (75 % overlap)
ABSOLUTE_GATE = -70.0
RELATIVE_GATE = -10.0
SLICE = 1 << 16  # samples filtered at once


class LoudnessMeter:
    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.hop = rate // 10
        stages = pyloudnorm.Meter(rate)._filters.values()  # K-weighting: high shelf, then high pass
        self._stages = [(np.asarray(f.b, dtype=np.float64), np.asarray(f.a, dtype=np.float64),
                         float(f.passband_gain)) for f in stages]
        self._state = [np.zeros(max(len(b), len(a)) - 1) for b, a, _ in self._stages]
        self._hops: list[np.ndarray] = []
        self._partial = 0.0
        self._partial_n = 0
        self.samples = 0

    def feed(self, block: np.ndarray) -> None:
        """The next samples (any length; float32 or float64), filtered a slice at a time so a
        long block costs a few float64 slices of memory, not four copies of itself."""
        for start in range(0, len(block), SLICE):
            self._feed(block[start:start + SLICE])

    def _feed(self, block: np.ndarray) -> None:
        x = np.asarray(block, dtype=np.float64)
        if x.size == 0:
            return
        self.samples += x.size
        for i, (b, a, gain) in enumerate(self._stages):
            y, self._state[i] = lfilter(b, a, x, zi=self._state[i])
            x = y * gain
        squares = x * x
        pos = 0
        if self._partial_n:
            take = min(self.hop - self._partial_n, squares.size)
            self._partial += float(squares[:take].sum())
            self._partial_n += take
            pos = take
            if self._partial_n == self.hop:
                self._hops.append(np.array([self._partial]))
                self._partial, self._partial_n = 0.0, 0
        full = (squares.size - pos) // self.hop
        if full:
            self._hops.append(squares[pos:pos + full * self.hop].reshape(full, self.hop).sum(axis=1))
            pos += full * self.hop
        if pos < squares.size:
            self._partial += float(squares[pos:].sum())
            self._partial_n += squares.size - pos

    def integrated(self) -> float:
        """Integrated loudness in LUFS of everything fed; -inf if every block is under the gate."""
        seconds = self.samples / self.rate
        blocks = int(np.round((seconds - BLOCK_HOPS / 10) / 0.1)) + 1
        if blocks <= 0:
            return float("-inf")
        hops = np.concatenate([*self._hops, np.array([self._partial] if self._partial_n else [])])
        hops = np.concatenate([hops, np.zeros(max(0, blocks + BLOCK_HOPS - 1 - hops.size))])
        running = np.concatenate([[0.0], np.cumsum(hops)])
        energy = (running[BLOCK_HOPS:blocks + BLOCK_HOPS] - running[:blocks]) / (self.hop * BLOCK_HOPS)
        with np.errstate(divide="ignore"):
            loudness = -0.691 + 10.0 * np.log10(energy)
        passed = energy[loudness >= ABSOLUTE_GATE]
        if passed.size == 0:
            return float("-inf")
        relative = -0.691 + 10.0 * np.log10(passed.mean()) + RELATIVE_GATE
        gated = energy[(loudness > relative) & (loudness > ABSOLUTE_GATE)]
        if gated.size == 0:
            return float("-inf")
        return float(-0.691 + 10.0 * np.log10(gated.mean()))
