"""PCM helpers: the conversions at the edges of the 48 kHz mono float32 world."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

SAMPLE_RATE = 48000

Audio = npt.NDArray[np.float32]


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def gain_to_db(gain: float) -> float:
    return float(20.0 * np.log10(max(gain, 1e-12)))


def to_mono(samples: npt.NDArray[np.floating]) -> Audio:
    """Average the channels of a (frames, channels) array; 1-D input passes through."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    return samples.mean(axis=1, dtype=np.float32)


def resample(samples: Audio, rate: int) -> Audio:
    """Resample mono audio to 48 kHz with soxr (high quality, done once on load)."""
    if rate == SAMPLE_RATE:
        return samples.astype(np.float32, copy=False)
    if rate <= 0:
        raise ValueError(f"invalid sample rate {rate}")
    return soxr.resample(samples.astype(np.float32, copy=False), rate, SAMPLE_RATE, quality="HQ").astype(np.float32)


def rms_dbfs(samples: Audio) -> float:
    """RMS level in dBFS (a full-scale sine reads -3 dBFS)."""
    if samples.size == 0:
        return -float("inf")
    return gain_to_db(float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))))


def dominant_frequency(samples: Audio, rate: int = SAMPLE_RATE) -> float:
    """Frequency of the strongest spectral peak, refined by parabolic interpolation."""
    window = np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(samples * window))
    k = int(np.argmax(spectrum[1:]) + 1)
    if 0 < k < spectrum.size - 1:
        a, b, c = np.log(spectrum[k - 1:k + 2] + 1e-12)
        k_refined = k + 0.5 * (a - c) / (a - 2 * b + c)
    else:
        k_refined = float(k)
    return float(k_refined * rate / samples.size)
