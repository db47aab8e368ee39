"""Speech brought to the library's loudness (control/speech.py): the look-ahead peak limiter and
how much of it speech may use. Pure functions on synthetic signals with known peaks."""

from __future__ import annotations

import numpy as np
import pytest

from broadcaster.codecs.loudness import LoudnessMeter
from broadcaster.codecs.pcm import SAMPLE_RATE, db_to_gain
from broadcaster.control.speech import LOOKAHEAD, MAX_LIMITING_DB, limit_peaks, normalise_speech

CEILING = db_to_gain(-1.0)


def lufs(audio: np.ndarray) -> float:
    meter = LoudnessMeter(SAMPLE_RATE)
    meter.feed(audio)
    return meter.integrated()


def speech_like(seconds: float = 4.0, crest_db: float = 18.0, seed: int = 7) -> np.ndarray:
    """Syllables of 300 Hz voiced sound at -20 dBFS RMS, with one short plosive burst each that
    peaks ``crest_db`` over the RMS: the shape of espeak-ng's output."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = (np.sin(2 * np.pi * 4 * t) > -0.2).astype(np.float32)
    voiced = (0.1 * np.sqrt(2) * np.sin(2 * np.pi * 300 * t) * envelope).astype(np.float32)
    for start in range(2400, voiced.size - 480, SAMPLE_RATE // 4):
        burst = rng.standard_normal(96).astype(np.float32)
        voiced[start:start + 96] += burst / np.max(np.abs(burst)) * 0.1 * db_to_gain(crest_db)
    return voiced


def test_no_sample_leaves_above_the_ceiling_and_far_from_peaks_nothing_changes() -> None:
    audio = speech_like() * np.float32(2.0)
    limited = limit_peaks(audio, CEILING)
    assert float(np.max(np.abs(limited))) <= CEILING
    over = np.flatnonzero(np.abs(audio) > CEILING)
    far = np.ones(audio.size, bool)
    for i in over:
        far[max(0, i - 2 * LOOKAHEAD):i + 2 * LOOKAHEAD] = False
    assert far.sum() > audio.size // 2
    assert np.array_equal(limited[far], audio[far]), "only the neighbourhood of a peak is touched"
    gain = limited[audio != 0] / audio[audio != 0]
    assert float(np.max(np.abs(np.diff(gain)))) < 2.0 / LOOKAHEAD, "the gain ramps, it never steps"


def test_limiting_works_across_block_boundaries_of_a_long_text() -> None:
    audio = np.tile(speech_like(2.0), 8) * np.float32(3.0)  # 16 s: past the 11 s block
    limited = limit_peaks(audio, CEILING)
    assert float(np.max(np.abs(limited))) <= CEILING
    half = audio.size // 2
    assert np.allclose(limited[:half], limited[half:], atol=1e-6), "the same audio limited the same everywhere"


def test_speech_reaches_the_target_with_a_few_db_of_limiting() -> None:
    audio = speech_like(crest_db=14.0) * np.float32(0.3)
    crest = 20 * np.log10(np.max(np.abs(audio))) - lufs(audio)
    assert crest > 18.0, "like espeak-ng's: a gain alone under the ceiling would stop 3 LU short"
    out = normalise_speech(audio, -16.0)
    assert out is not None
    assert lufs(out) == pytest.approx(-16.0, abs=0.15)
    assert float(np.max(np.abs(out))) <= CEILING


def test_speech_without_peaks_gets_a_gain_only_and_extreme_peaks_leave_it_quieter() -> None:
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.01 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    out = normalise_speech(tone, -16.0)
    assert out is not None and lufs(out) == pytest.approx(-16.0, abs=0.05)
    assert np.allclose(out / np.max(out), tone / np.max(tone), atol=1e-5), "no limiting where none is needed"

    spiky = tone.copy()
    spiky[::SAMPLE_RATE] = 1.0  # 40 dB over the tone: more than speech may be limited
    out = normalise_speech(spiky, -16.0)
    assert out is not None and float(np.max(np.abs(out))) <= CEILING
    gain_db = 20 * np.log10(np.max(np.abs(out[1000:SAMPLE_RATE - 1000])) / 0.01)
    assert gain_db == pytest.approx(-1.0 + MAX_LIMITING_DB, abs=0.1), "the spikes took the whole budget"
    assert lufs(out) < -20.0, "quieter than the target rather than squashed"


def test_silence_is_none() -> None:
    assert normalise_speech(np.zeros(SAMPLE_RATE * 2, np.float32), -16.0) is None
    assert normalise_speech(np.full(SAMPLE_RATE * 2, 1e-6, np.float32), -16.0) is None
