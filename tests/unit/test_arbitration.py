"""Priority arbitration on synthetic frames: every pair of classes, both policies, pause/resume/skip, ramps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from broadcaster.codecs.pcm import db_to_gain
from broadcaster.core.mixer import PRIORITY_NAMES, Mixer, Priority
from broadcaster.core.sources.pcm import BufferSource


def dc(value: float, seconds: float = 1.0) -> BufferSource:
    return BufferSource(np.full(int(seconds * 48000), value, dtype=np.float32))


def steady(mixer: Mixer, frames: int = 5) -> float:
    out = None
    for _ in range(frames):
        out = mixer.mix()
    assert out is not None
    return float(out[-1])


@pytest.mark.parametrize("low, high", list(itertools.combinations(sorted(Priority), 2)))
@pytest.mark.parametrize("policy", ["preempt", "duck"])
def test_every_pair_of_classes(low: Priority, high: Priority, policy: str) -> None:
    mixer = Mixer()
    mixer.add(dc(0.1), priority=low)
    mixer.add(dc(0.2), priority=high, policy=policy, duck_db=-20.0)
    expected = 0.2 + (0.0 if policy == "preempt" else 0.1 * db_to_gain(-20.0))
    assert steady(mixer) == pytest.approx(expected, abs=1e-5)


def test_equal_classes_mix() -> None:
    mixer = Mixer()
    mixer.add(dc(0.1), priority=Priority.ANNOUNCEMENT)
    mixer.add(dc(0.2), priority=Priority.ANNOUNCEMENT)
    mixer.add(dc(0.3), priority=Priority.SCHEDULED)
    assert steady(mixer) == pytest.approx(0.3, abs=1e-5)


def test_a_preempted_programme_pauses_and_resumes_where_it_stopped() -> None:
    mixer = Mixer()
    programme = BufferSource(np.arange(48000, dtype=np.float32) / 48000 / 4)
    mixer.add(programme, priority=Priority.SCHEDULED, on_preempt="pause", fade_in=False)
    for _ in range(10):
        mixer.mix()
    alert = mixer.add(dc(0.5, seconds=0.2), priority=Priority.EMERGENCY)
    for _ in range(10):  # the alert plays for 10 frames (0.2 s)
        out = mixer.mix()
        assert out is not None
    assert alert not in mixer.inputs
    resumed = [mixer.mix() for _ in range(2)][1]
    assert resumed is not None
    # One frame moved on during the fade-out; the rest of the alert time the programme stood still.
    assert resumed[0] * 4 * 48000 == pytest.approx(960 * 12, abs=1)


def test_a_skip_programme_ends_when_preempted() -> None:
    mixer = Mixer()
    ended: list[str] = []
    mixer.add(dc(0.1), priority=Priority.SCHEDULED, on_preempt="skip", on_end=lambda item, how: ended.append(how))
    mixer.add(dc(0.3, seconds=0.1), priority=Priority.ANNOUNCEMENT)
    for _ in range(3):
        mixer.mix()
    assert ended == ["skipped"] and len(mixer.inputs) == 1


def test_a_live_session_keeps_running_muted_and_returns() -> None:
    mixer = Mixer()
    live = dc(0.1, seconds=1.0)
    mixer.add(live, priority=Priority.LIVE)  # on_preempt "continue"
    mixer.add(dc(0.4, seconds=0.2), priority=Priority.EMERGENCY)
    assert steady(mixer, 5) == pytest.approx(0.4, abs=1e-5)
    for _ in range(10):
        mixer.mix()
    assert steady(mixer, 2) == pytest.approx(0.1, abs=1e-5)
    assert live._position == 17 * 960, "it kept running underneath"


@pytest.mark.parametrize("policy", ["preempt", "duck"])
def test_switches_ramp_without_a_step(policy: str) -> None:
    t = np.arange(48000) / 48000
    mixer = Mixer(ramp_ms=5.0)
    mixer.add(BufferSource((0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)), priority=Priority.SCHEDULED,
              fade_in=False)
    out = [mixer.mix() for _ in range(5)]
    mixer.add(BufferSource((0.5 * np.sin(2 * np.pi * 300 * t[:9600])).astype(np.float32)),
              priority=Priority.EMERGENCY, policy=policy)
    out += [mixer.mix() for _ in range(15)]
    audio = np.concatenate([o for o in out if o is not None])
    # The largest sample-to-sample change of the two tones themselves is about 0.02; no switch may exceed it much.
    assert np.abs(np.diff(audio)).max() < 0.03


def test_the_national_bulletin_classes_map_onto_the_priorities() -> None:
    assert PRIORITY_NAMES["thong-thuong"] is Priority.SCHEDULED
    assert PRIORITY_NAMES["uu-tien"] is Priority.ANNOUNCEMENT
    assert PRIORITY_NAMES["khan-cap"] is Priority.EMERGENCY
