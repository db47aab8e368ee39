"""The real-time core on a fake clock: commands at frame boundaries, frame-exact
starts, cuts, first-frame events and what a bad command does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from broadcaster import metrics
from broadcaster.codecs.shared import share
from broadcaster.config import AudioConfig, HttpConfig, SpeakerPolicy
from broadcaster.core import commands as c
from broadcaster.core.commands import CoreSettings
from broadcaster.core.engine import UNVERIFIED_WHEN_BEHIND, Core
from broadcaster.core.outputs import EncodedFrame
from broadcaster.core.sources.alert import AlertSpec
from broadcaster.core.sources.pcm import PcmSpec
from broadcaster.core.sources.tone import ToneSpec
from broadcaster.protocols.speaker import MessageType, encode_message, parse_envelope

START = 500.0
FRAME = 0.02


class FakeClock:
    def __init__(self) -> None:
        self.t = START

    def __call__(self) -> float:
        return self.t


class Capture:
    """An output that keeps every mixed frame (None when nothing played)."""

    kind = "capture"
    active = True

    def __init__(self) -> None:
        self.frames: list[np.ndarray | None] = []

    def send(self, frame: EncodedFrame) -> None:
        self.frames.append(None if frame.pcm is None else frame.pcm.copy())

    def idle(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {}


class Harness:
    def __init__(self, channels: tuple[str, ...] = ("ch-a",)) -> None:
        self.clock = FakeClock()
        self.events: list[c.Event] = []
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        settings = CoreSettings(AudioConfig(), HttpConfig(), SpeakerPolicy(), fanout="loop")
        self.core = Core(settings, self, now=self.clock, wall=lambda: 1.8e9, emit=self.events.append)
        self.core.start()
        self.capture: dict[str, Capture] = {}
        for channel in channels:
            self.core.submit(c.AddChannel(c.ChannelSpec(id=channel, name=channel, zone="z")))
        self.run_until(0)
        for channel in channels:
            capture = self.capture[channel] = Capture()
            self.core.channels[channel].outputs.append(capture)

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        self.sent.append((data, address))
        return len(data)

    def run_until(self, tick: int) -> None:
        """Advance the fake clock frame by frame to the deadline of ``tick``, running what is due."""
        while self.core.clock.tick_index <= tick:
            self.clock.t = max(self.clock.t, START + self.core.clock.tick_index * FRAME)
            self.core.run_due()

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def dc(level: float, seconds: float) -> np.ndarray:
    return np.full(int(48000 * seconds), level, dtype=np.float32)


@pytest.fixture(autouse=True)
def shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)


def test_an_item_due_mid_frame_starts_at_its_exact_sample() -> None:
    h = Harness()
    due = START + 0.5 + 0.013  # 13 ms into frame 25
    h.core.submit(c.AddInput("news", ("ch-a",), PcmSpec(share(dc(0.5, 1.0))), priority=20, start_at=due))
    h.run_until(30)
    frames = h.capture["ch-a"].frames  # frame 0 was before the capture joined
    assert all(f is None for f in frames[:24]), "nothing plays before its frame"
    first = frames[24]
    assert first is not None
    lead = round(0.013 * 48000)  # 624 samples of silence, then its 5 ms fade-in begins at its first sample
    assert np.all(first[:lead] == 0.0)
    ramp = 0.5 * np.arange(1, 241) / 240
    assert first[lead:lead + 240] == pytest.approx(ramp, abs=1e-6)
    assert first[lead + 240:] == pytest.approx(np.full(960 - lead - 240, 0.5), abs=1e-6)
    started = h.of(c.InputStarted)
    assert [(e.input_id, e.channel) for e in started] == [("news", "ch-a")]
    assert started[0].at == START + 25 * FRAME


def test_a_command_is_applied_at_the_next_frame_boundary() -> None:
    h = Harness()
    h.run_until(10)
    h.clock.t += 0.007  # mid-frame: the command waits for the next tick
    before = metrics.CORE_REGISTRY.get_sample_value("broadcaster_alert_latency_seconds_count") or 0.0
    h.core.submit(c.AddInput("a-1", ("ch-a",), AlertSpec(repeat=1, gap_s=0), priority=50, fade_in=False,
                             accepted_at=h.clock.t))
    assert h.capture["ch-a"].frames[-1] is None
    h.run_until(11)
    assert h.capture["ch-a"].frames[-1] is not None, "the attention signal is heard in the very next frame"
    (started,) = h.of(c.InputStarted)
    assert started.at - (START + 10 * FRAME + 0.007) == pytest.approx(FRAME - 0.007)
    after = metrics.CORE_REGISTRY.get_sample_value("broadcaster_alert_latency_seconds_count")
    assert after == before + 1


def test_the_next_programme_cuts_the_one_before_in_its_first_frame() -> None:
    h = Harness()
    h.core.submit(c.AddInput("first", ("ch-a",), PcmSpec(share(dc(0.25, 5.0))), priority=20))
    h.core.submit(c.AddInput("second", ("ch-a",), PcmSpec(share(dc(0.5, 5.0))), priority=20,
                             start_at=START + 1.0, cuts=("first",)))
    h.run_until(60)
    ended = [(e.input_id, e.how) for e in h.of(c.InputEnded)]
    assert ended == [("first", "removed")]
    frame_50 = h.capture["ch-a"].frames[49]  # tick 50, the second's first frame: the first fades as it starts
    assert frame_50 is not None and frame_50[-1] == pytest.approx(0.5, abs=1e-6)
    # A crossfade, not a gap: every sample is the sum of the one fading out and the one fading in.
    t = np.arange(1, 241) / 240
    assert frame_50[:240] == pytest.approx(0.25 * (1 - t) + 0.5 * t, abs=1e-6)
    assert h.capture["ch-a"].frames[55] == pytest.approx(np.full(960, 0.5, np.float32), abs=1e-6)


def test_a_cut_mid_frame_crossfades_at_the_exact_sample() -> None:
    h = Harness()
    h.core.submit(c.AddInput("first", ("ch-a",), PcmSpec(share(dc(0.25, 5.0))), priority=20))
    h.core.submit(c.AddInput("second", ("ch-a",), PcmSpec(share(dc(0.5, 5.0))), priority=20,
                             start_at=START + 1.0 + 0.015, cuts=("first",)))
    h.run_until(60)
    frame = h.capture["ch-a"].frames[49]  # tick 50 covers the start, 720 samples in
    assert frame is not None
    assert frame[:720] == pytest.approx(np.full(720, 0.25), abs=1e-6), "the first plays up to the cut"
    t = np.arange(1, 241) / 240
    assert frame[720:] == pytest.approx(0.25 * (1 - t) + 0.5 * t, abs=1e-6), "no silence, no step: a crossfade"


def test_a_cut_never_removes_an_input_still_waiting_for_its_time() -> None:
    h = Harness()
    h.core.submit(c.AddInput("later", ("ch-a",), PcmSpec(share(dc(0.5, 1.0))), priority=20, start_at=START + 2.0))
    h.core.submit(c.AddInput("now", ("ch-a",), PcmSpec(share(dc(0.25, 0.5))), priority=20, cuts=("later",)))
    h.run_until(160)
    assert [(e.input_id, e.how) for e in h.of(c.InputEnded)] == [("now", "finished"), ("later", "finished")]


def test_an_alert_whose_message_cannot_be_read_ends_after_its_signal() -> None:
    from broadcaster.codecs.shared import SharedPcm

    h = Harness()
    h.core.submit(c.AddInput("a-3", ("ch-a",), AlertSpec(repeat=1, gap_s=0.0), priority=50, fade_in=False))
    h.run_until(5)
    h.core.submit(c.SetMessage("a-3", SharedPcm("/nonexistent/broadcaster-pcm-gone.f32", 48000)))
    h.run_until(300)
    assert [(e.input_id, e.how) for e in h.of(c.InputEnded)] == [("a-3", "finished")], "not silence forever"


def test_a_refused_input_does_not_leave_its_shared_audio_behind(tmp_path: Path) -> None:
    h = Harness()
    pcm = share(dc(0.5, 1.0))
    h.core.submit(c.AddInput("x", ("no-such-channel",), PcmSpec(pcm), priority=20))
    h.run_until(2)
    assert not Path(pcm.path).exists()


def test_removing_a_pending_input_means_it_never_plays() -> None:
    h = Harness()
    h.core.submit(c.AddInput("later", ("ch-a",), ToneSpec(440.0), priority=20, start_at=START + 1.0))
    h.run_until(5)
    h.core.submit(c.RemoveInput("later"))
    h.run_until(80)
    assert all(f is None for f in h.capture["ch-a"].frames)
    assert [(e.input_id, e.how) for e in h.of(c.InputEnded)] == [("later", "removed")]
    assert h.of(c.InputStarted) == []


def test_an_input_for_a_missing_channel_is_refused_there_and_plays_elsewhere() -> None:
    h = Harness(("ch-a",))
    h.core.submit(c.AddInput("t", ("ch-a", "nope"), ToneSpec(440.0, duration_s=0.1), priority=20))
    h.run_until(10)
    assert ("t", "nope", "refused") in [(e.input_id, e.channel, e.how) for e in h.of(c.InputEnded)]
    assert ("t", "ch-a", "finished") in [(e.input_id, e.channel, e.how) for e in h.of(c.InputEnded)]
    assert sum(f is not None for f in h.capture["ch-a"].frames) == 5


def test_an_alert_message_joins_when_it_is_ready_and_then_the_alert_ends() -> None:
    h = Harness()
    h.core.submit(c.AddInput("a-2", ("ch-a",), AlertSpec(repeat=1, gap_s=0.0), priority=50, fade_in=False))
    h.run_until(20)
    assert h.of(c.InputEnded) == [], "the alert holds the channel while its message is made"
    h.core.submit(c.SetMessage("a-2", share(dc(0.3, 0.2))))
    h.run_until(400)
    assert [(e.input_id, e.how) for e in h.of(c.InputEnded)] == [("a-2", "finished")]
    heard = [f for f in h.capture["ch-a"].frames if f is not None]
    assert any(np.allclose(f, 0.3, atol=1e-6) for f in heard), "the message itself was played"


def test_live_audio_is_buffered_then_played() -> None:
    from broadcaster.core.sources.live import LiveSpec

    h = Harness()
    h.core.submit(c.AddInput("l-1", ("ch-a",), LiveSpec(target_delay_s=0.1, max_delay_s=1.0, stall_s=1.0),
                             priority=30))
    h.run_until(2)
    h.core.submit(c.LiveAudio("l-1", dc(0.2, 0.5).tobytes()))
    h.run_until(40)
    played = [f for f in h.capture["ch-a"].frames if f is not None and np.any(f)]
    assert played and np.allclose(played[3], 0.2, atol=1e-6)


def test_status_reports_what_is_on_air_once_a_second() -> None:
    h = Harness()
    h.core.submit(c.AddInput("bg", ("ch-a",), ToneSpec(440.0), priority=10))
    h.run_until(100)
    status = h.of(c.Status)[-1]
    assert status.ticks == 101 and status.missed == 0
    assert status.channels["ch-a"]["top"] == 10
    assert status.channels["ch-a"]["inputs"][0]["id"] == "bg"


def test_queries_are_answered_at_once() -> None:
    h = Harness()
    h.core.submit(c.Query(7, "metrics"))
    (answer,) = h.of(c.Answer)
    assert answer.query_id == 7 and b"broadcaster_ticks_missed_total" in answer.value
    assert b"broadcaster_http_requests_total" not in answer.value, "control's metrics are not the core's"


def test_behind_a_flood_subscribed_loudspeakers_go_first_and_the_rest_is_shed() -> None:
    """A batch read while the socket was behind: the keepalive from a subscribed address is
    answered although it came last, behind 300 forged datagrams; only UNVERIFIED_WHEN_BEHIND of
    those are examined (each costs an HMAC), the others counted as shed."""
    h = Harness()
    key, speaker = b"key-of-the-real-loudspeaker", ("127.0.0.1", 40001)
    h.core.submit(c.SetDevices((c.Device(id="spk-1", key=key, channel="ch-a", zone="z", volume=80),)))
    h.run_until(1)
    seq = iter(range(1, 1000))

    def subscribe(cookie: str | None = None, sign: bytes = key) -> bytes:
        body: dict[str, Any] = {"channel": "ch-a", "ts": int(1.8e9 * 1000), "seq": next(seq)}
        if cookie:
            body["cookie"] = cookie
        return encode_message(MessageType.SUBSCRIBE, "spk-1", body, sign)

    h.core.datagram(subscribe(), speaker)
    cookie = parse_envelope(h.sent[-1][0]).json()["cookie"]
    h.core.datagram(subscribe(cookie), speaker)
    assert parse_envelope(h.sent[-1][0]).json()["verified"] is True
    forged = [(subscribe(sign=b"not-the-key-at-all-000"), ("127.0.0.1", 50000 + i)) for i in range(299)]
    # From the loudspeaker's own address but naming another device: no priority for that.
    forged.append((encode_message(MessageType.SUBSCRIBE, "spk-9", {"channel": "ch-a"}, b"x" * 16), speaker))

    def count(reason: str) -> float:
        return metrics.CORE_REGISTRY.get_sample_value("broadcaster_datagrams_rejected_total", {"reason": reason}) or 0

    # Behind but no flood yet: everything is examined (5,000 loudspeakers subscribing look like this).
    bad = count("bad_mac")
    h.core.datagrams(forged[:100], behind=True)
    assert count("bad_mac") - bad == 100
    h.core.datagrams(forged * 2, behind=False)  # 600 refused within the second ...
    h.run_until(h.core.clock.tick_index + h.core.ticks_per_second)  # ... make it a flood at the next second
    assert h.core.flooded
    shed, bad = count("shed"), count("bad_mac")
    h.sent.clear()
    h.core.datagrams([*forged, (subscribe(cookie), speaker)], behind=True)
    assert [address for _, address in h.sent] == [speaker], "the keepalive is answered"
    assert count("bad_mac") - bad == UNVERIFIED_WHEN_BEHIND
    assert count("shed") - shed == 300 - UNVERIFIED_WHEN_BEHIND

    bad = count("bad_mac")
    h.core.datagrams(forged[:100], behind=False)  # keeping up: everything is examined, in order
    assert count("bad_mac") - bad == 100 and count("shed") - shed == 300 - UNVERIFIED_WHEN_BEHIND



def test_a_busy_frame_drops_nothing_that_was_read() -> None:
    """Past the frame's deadline the reader stops reading (the rest waits in the socket); what it
    did read is all handled. Dropping it instead made 5,000 loudspeakers' keepalives go missing
    behind a slow frame (benchmarks/fanout.py, --fanout loop) until their subscriptions expired."""
    h = Harness()
    key = b"key-of-the-real-loudspeaker"
    h.core.submit(c.SetDevices((c.Device(id="spk-1", key=key, channel="ch-a", zone="z", volume=80),)))
    h.run_until(1)
    forged = [(encode_message(MessageType.SUBSCRIBE, "spk-1", {"channel": "ch-a", "ts": int(1.8e9 * 1000), "seq": i},
                              b"not-the-key-at-all-000"), ("127.0.0.1", 50000 + i)) for i in range(100)]

    def count(reason: str) -> float:
        return metrics.CORE_REGISTRY.get_sample_value("broadcaster_datagrams_rejected_total", {"reason": reason}) or 0

    shed, bad = count("shed"), count("bad_mac")
    h.clock.t = h.core.next_deadline + 0.001  # the next frame is due
    h.core.datagrams(forged, behind=False)
    assert count("bad_mac") - bad == 100 and count("shed") == shed
