"""Mixer on synthetic frames: sums, ramps without clicks, never clips."""

import numpy as np
import numpy.typing as npt

from broadcaster.core.mixer import Mixer, Priority
from broadcaster.core.sources.pcm import BufferSource
from broadcaster.core.sources.tone import ToneSource

# Expected signals are built here with numpy from the definitions, not with the project's own helpers: a
# sine at an RMS level L dBFS has peak 10^(L/20)·√2 (-12 dBFS: 0.2512 RMS, 0.3552 peak; -20: 0.1, 0.1414).
RAMP = 240  # samples in the default 5 ms ramp at 48 kHz


def sine(frequency_hz: float, level_dbfs: float, start: int, count: int) -> npt.NDArray[np.float64]:
    n = np.arange(start, start + count)
    return 10 ** (level_dbfs / 20) * np.sqrt(2) * np.sin(2 * np.pi * frequency_hz * n / 48000)


def rms(audio: npt.NDArray[np.floating]) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def run(mixer: Mixer, frames: int) -> np.ndarray:
    out = []
    for _ in range(frames):
        frame = mixer.mix()
        out.append(np.zeros(mixer.frame_samples, np.float32) if frame is None else frame)
    return np.concatenate(out)


def test_empty_mixer_produces_nothing() -> None:
    assert Mixer().mix() is None


def test_one_tone_passes_unchanged_sample_for_sample() -> None:
    mixer = Mixer()
    mixer.add(ToneSource(440.0, -12.0), fade_in=False)
    frames = [mixer.mix() for _ in range(50)]
    assert all(f is not None and f.dtype == np.float32 and f.shape == (960,) for f in frames)
    audio = np.concatenate([f for f in frames if f is not None])
    np.testing.assert_allclose(audio, sine(440.0, -12.0, 0, 48000), atol=1e-6)
    assert abs(np.abs(audio).max() - 0.3552) < 1e-4
    assert abs(rms(audio) - 0.2512) < 1e-4  # one second is exactly 440 cycles


def test_two_sources_sum() -> None:
    mixer = Mixer()
    mixer.add(ToneSource(440.0, -20.0), fade_in=False)
    mixer.add(ToneSource(1000.0, -20.0), fade_in=False)
    audio = run(mixer, 50)
    np.testing.assert_allclose(audio, sine(440.0, -20.0, 0, 48000) + sine(1000.0, -20.0, 0, 48000), atol=1e-6)
    # Two uncorrelated tones of 0.1 RMS each: powers add, √2 · 0.1 = 0.1414 (-17 dBFS).
    assert abs(rms(audio) - 0.1414) < 1e-4


def test_limiter_never_lets_a_sample_over_the_ceiling() -> None:
    mixer = Mixer(ceiling_dbfs=-1.0)
    for f in (300.0, 301.0, 302.0, 303.0):
        mixer.add(ToneSource(f, -3.0), fade_in=False)  # sum peaks near +9 dBFS
    audio = run(mixer, 200)
    assert np.abs(audio).max() <= 10 ** (-1 / 20) + 1e-6
    assert rms(audio) > 0.2512  # limited, not muted: still above -12 dBFS RMS


def test_gain_change_ramps_without_a_step() -> None:
    mixer = Mixer(ramp_ms=5.0)
    item = mixer.add(ToneSource(100.0, -6.0), fade_in=False)
    before = run(mixer, 5)
    item.gain_db = -40.0
    after = run(mixer, 5)
    audio = np.concatenate([before, after])
    # A 100 Hz tone at -6 dBFS moves at most ~0.0093 per sample; a switch must not exceed that.
    assert np.abs(np.diff(audio)).max() < 0.012
    # The ramp: gain goes 1 → 0.01 linearly over 240 samples of the next frame, then stays at 0.01 (-40 dB).
    tone = sine(100.0, -6.0, 4800, 4800)
    gains = 1.0 + (0.01 - 1.0) * np.minimum(np.arange(1, 961) / RAMP, 1.0)
    np.testing.assert_allclose(after[:960], tone[:960] * gains, atol=1e-6)
    np.testing.assert_allclose(after[960:], tone[960:] * 0.01, atol=1e-7)


def test_new_input_fades_in_and_removed_input_fades_out() -> None:
    # A constant 0.5 makes the gain visible in every sample (a sine starts at 0 with or without a fade).
    mixer = Mixer(ramp_ms=5.0)
    item = mixer.add(BufferSource(np.full(960 * 10, 0.5, dtype=np.float32)))
    first = mixer.mix()
    assert first is not None
    ramp = np.arange(1, RAMP + 1) / RAMP  # 1/240, 2/240, ... 1
    np.testing.assert_allclose(first[:RAMP], 0.5 * ramp, atol=1e-7)
    np.testing.assert_allclose(first[RAMP:], 0.5)
    mixer.remove(item)
    assert mixer.inputs == [item], "still fading out"
    last = mixer.mix()
    assert last is not None
    np.testing.assert_allclose(last[:RAMP], 0.5 * (1 - ramp), atol=1e-7)
    assert last[RAMP - 1] == 0.0 and not last[RAMP:].any()
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
    frames = [f for f in (source.read() for _ in range(3)) if f is not None]
    assert len(frames) == 3 and not source.finished
    assert np.array_equal(np.concatenate(frames), np.concatenate([np.arange(1920), np.arange(960)]))


def test_loop_not_a_multiple_of_the_frame_wraps_inside_a_frame() -> None:
    source = BufferSource(np.arange(1000, dtype=np.float32), loop=True)
    first, second = source.read(), source.read()
    assert first is not None and second is not None
    # 0..959, then 960..999 and straight on from 0: 0..919.
    assert np.array_equal(second, np.concatenate([np.arange(960, 1000), np.arange(920)]))


def test_skip_advances_media_time() -> None:
    tone = ToneSource(440.0, duration_s=0.1)
    mixer = Mixer()
    mixer.add(tone)
    for _ in range(5):
        mixer.skip()
    assert tone.finished and mixer.inputs == []


def test_a_live_input_preempts_a_scheduled_one_whatever_the_order_added() -> None:
    for live_first in (True, False):
        mixer = Mixer()
        scheduled = BufferSource(np.full(960 * 5, 0.125, dtype=np.float32))
        live = BufferSource(np.full(960 * 5, 0.25, dtype=np.float32))
        adds = [(live, Priority.LIVE), (scheduled, Priority.SCHEDULED)]
        for source, priority in adds if live_first else adds[::-1]:
            mixer.add(source, priority=priority, fade_in=False)
        frame = mixer.mix()
        assert frame is not None
        # Scheduled ramps 0.125 → 0 over the ramp, live plays at 0.25 throughout; then live alone.
        ramp = np.minimum(np.arange(1, 961) / RAMP, 1.0)
        np.testing.assert_allclose(frame, 0.25 + 0.125 * (1 - ramp), atol=1e-7)
        assert mixer.top == Priority.LIVE
        assert [i.preempted for i in mixer.inputs] == [i.priority == Priority.SCHEDULED for i in mixer.inputs]
        frame = mixer.mix()
        assert frame is not None and np.allclose(frame, 0.25, atol=0)


def test_highest_class_with_audio_plays_and_lower_comes_back() -> None:
    mixer = Mixer(ramp_ms=5.0)
    mixer.add(ToneSource(440.0, -12.0), priority=Priority.BACKGROUND, fade_in=False)
    live = BufferSource(np.full(960 * 10, 0.25, dtype=np.float32))
    mixer.add(live, priority=Priority.LIVE)
    during = run(mixer, 10)
    after = run(mixer, 10)
    # While live has audio the background tone is muted after the 5 ms ramp: the output is the live DC level.
    np.testing.assert_allclose(during[RAMP:], 0.25, atol=1e-7)
    # The background kept running while muted (on_preempt "continue"): it comes back where media time is,
    # sample 9600 of the tone, ramping in over 5 ms, then exactly the tone.
    tone = sine(440.0, -12.0, 9600, 9600)
    np.testing.assert_allclose(after[RAMP:], tone[RAMP:], atol=1e-6)
    np.testing.assert_allclose(after[:RAMP], tone[:RAMP] * np.arange(1, RAMP + 1) / RAMP, atol=1e-6)
    assert np.abs(np.diff(np.concatenate([during, after]))).max() < 0.26  # ramps, no worse than the step itself
