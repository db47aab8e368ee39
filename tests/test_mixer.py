"""Mixer on synthetic frames: sums, ramps without clicks, never clips."""

import numpy as np
import pytest

from broadcaster.codecs.pcm import dominant_frequency, rms_dbfs
from broadcaster.core.mixer import Mixer, Priority
from broadcaster.core.sources import BufferSource, ToneSource


def run(mixer: Mixer, frames: int) -> np.ndarray:
    out = []
    for _ in range(frames):
        frame = mixer.mix()
        out.append(np.zeros(mixer.frame_samples, np.float32) if frame is None else frame)
    return np.concatenate(out)


def test_empty_mixer_produces_nothing() -> None:
    assert Mixer().mix() is None


def test_one_tone_passes_at_its_level_and_frequency() -> None:
    mixer = Mixer()
    mixer.add(ToneSource(440.0, -12.0), fade_in=False)
    audio = run(mixer, 50)
    assert all(len(f) == 960 for f in np.split(audio, 50))
    assert abs(rms_dbfs(audio) - (-12.0)) < 0.05
    assert abs(dominant_frequency(audio) - 440.0) < 0.5


def test_two_sources_sum() -> None:
    mixer = Mixer()
    mixer.add(ToneSource(440.0, -20.0), fade_in=False)
    mixer.add(ToneSource(1000.0, -20.0), fade_in=False)
    audio = run(mixer, 50)
    spectrum = np.abs(np.fft.rfft(audio))
    freqs = np.fft.rfftfreq(audio.size, 1 / 48000)
    peaks = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert peaks == pytest.approx([440.0, 1000.0], abs=1.0)
    assert abs(rms_dbfs(audio) - (-17.0)) < 0.1  # two uncorrelated -20 dB tones


def test_limiter_never_lets_a_sample_over_the_ceiling() -> None:
    mixer = Mixer(ceiling_dbfs=-1.0)
    for f in (300.0, 301.0, 302.0, 303.0):
        mixer.add(ToneSource(f, -3.0), fade_in=False)  # sum peaks near +9 dBFS
    audio = run(mixer, 200)
    assert np.abs(audio).max() <= 10 ** (-1 / 20) + 1e-6
    assert rms_dbfs(audio) > -12.0  # limited, not muted


def test_gain_change_ramps_without_a_step() -> None:
    mixer = Mixer(ramp_ms=5.0)
    item = mixer.add(ToneSource(100.0, -6.0), fade_in=False)
    before = run(mixer, 5)
    item.gain_db = -40.0
    after = run(mixer, 5)
    audio = np.concatenate([before, after])
    # A 100 Hz tone at -6 dBFS moves at most ~0.0093 per sample; a switch must not exceed that.
    assert np.abs(np.diff(audio)).max() < 0.012
    assert abs(rms_dbfs(after[960:]) - (-46.0)) < 0.2


def test_new_input_fades_in_and_removed_input_fades_out() -> None:
    mixer = Mixer(ramp_ms=5.0)
    item = mixer.add(ToneSource(100.0, -6.0))
    first = mixer.mix()
    assert first is not None and abs(first[0]) < 1e-3
    mixer.remove(item)
    last = mixer.mix()
    assert last is not None and abs(last[-1]) < 1e-3
    assert mixer.inputs == []
    assert mixer.mix() is None


def test_finished_source_is_dropped_and_short_tail_is_padded() -> None:
    mixer = Mixer()
    audio = np.ones(1500, dtype=np.float32) * 0.5
    mixer.add(BufferSource(audio), fade_in=False)
    a, b = mixer.mix(), mixer.mix()
    assert a is not None and b is not None
    assert np.allclose(a, 0.5) and np.allclose(b[:540], 0.5) and np.allclose(b[540:], 0.0)
    assert mixer.mix() is None and mixer.inputs == []


def test_loop_wraps_around() -> None:
    source = BufferSource(np.arange(1920, dtype=np.float32), loop=True)
    frames = [source.read() for _ in range(3)]
    assert frames[2] is not None and frames[2][0] == 0.0 and not source.finished


def test_skip_advances_media_time() -> None:
    tone = ToneSource(440.0, duration_s=0.1)
    mixer = Mixer()
    mixer.add(tone)
    for _ in range(5):
        mixer.skip()
    assert tone.finished and mixer.inputs == []


def test_inputs_carry_priority() -> None:
    mixer = Mixer()
    item = mixer.add(ToneSource(440.0), priority=Priority.LIVE)
    assert item.priority == Priority.LIVE > Priority.SCHEDULED


def test_highest_class_with_audio_plays_and_lower_comes_back() -> None:
    mixer = Mixer(ramp_ms=5.0)
    mixer.add(ToneSource(440.0, -12.0), priority=Priority.BACKGROUND, fade_in=False)
    live = BufferSource(np.full(960 * 10, 0.25, dtype=np.float32))
    mixer.add(live, priority=Priority.LIVE)
    during = run(mixer, 10)
    after = run(mixer, 10)
    # While live has audio the background tone is muted: the output is the live DC level.
    assert np.allclose(during[960 * 2:], 0.25, atol=1e-4)
    assert abs(dominant_frequency(after[960 * 2:]) - 440.0) < 2.0
    assert np.abs(np.diff(np.concatenate([during, after]))).max() < 0.26  # ramps, no worse than the step itself
