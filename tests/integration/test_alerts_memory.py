"""Alerts through the whole server in memory: what a targeted loudspeaker hears, in order,
what an untargeted one never hears, commands and restores, and the records."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import soundfile

from tests.integration.memory import Server, Speaker

VN = ZoneInfo("Asia/Ho_Chi_Minh")


def band(window: np.ndarray, frequency: float) -> float:
    spectrum = np.abs(np.fft.rfft(window * np.hanning(window.size)))
    freqs = np.fft.rfftfreq(window.size, 1 / 48000)
    return float(spectrum[np.abs(freqs - frequency) < 15].sum() / (spectrum.sum() + 1e-12))


def labels(audio: np.ndarray, seconds: float = 0.25) -> list[str]:
    n = int(seconds * 48000)
    out = []
    for i in range(0, audio.size - n, n):
        w = audio[i:i + n]
        if np.sqrt(np.mean(w ** 2)) < 0.003:
            out.append("quiet")
        elif band(w, 440) > 0.5:
            out.append("loop")
        elif band(w, 880) > 0.5:
            out.append("prog")
        elif band(w, 300) > 0.5:
            out.append("speech")
        elif band(w, 960) + band(w, 640) > 0.5:
            out.append("tone")
        else:
            out.append("mixed")
    return out


def runs(heard: list[str]) -> list[str]:
    return [x for i, x in enumerate(heard) if (i == 0 or x != heard[i - 1]) and x not in ("quiet", "mixed")]


def live(server: Server, seconds: float, *speakers: Speaker, ack: bool = True) -> None:
    """Let time pass as devices live it: keepalives each second, commands acknowledged (unless not)."""
    for _ in range(round(seconds / 0.5)):
        server.advance(0.5)
        for speaker in speakers:
            if ack:
                speaker.ack_all()
            if round(server.reactor.seconds() * 2) % 2 == 0:
                speaker.keepalive()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    return Server(tmp_path)


def test_targeted_loudspeakers_hear_tone_then_message_then_their_programme(server: Server) -> None:
    a1, b1 = server.speaker("spk-a1", "ch-a", 40001), server.speaker("spk-b1", "ch-b", 40002)
    a1.subscribe()
    b1.subscribe()
    live(server, 1.5, a1, b1)
    status, alert = server.http("POST", "/api/v1/alerts", {
        "title": "Cảnh báo bão", "zones": ["commune-a"], "priority": "khan-cap", "repeat": 2, "gap_s": 0.5,
        "volume": 95, "text": "Bão số chín đang tiến vào đất liền."})
    assert status == 201 and alert["channels"] == ["ch-a"] and alert["priority"] == "emergency"
    live(server, 12.0, a1, b1)
    heard = runs(labels(a1.audio()))
    assert heard == ["loop", "tone", "speech", "tone", "speech", "loop"], heard
    assert set(labels(b1.audio())) <= {"quiet", "mixed"}, "the untargeted commune never hears it (ch-b is silent)"
    commands = a1.commands()
    assert commands[0] | {"seq": 0, "ts": 0} == {"alert": alert["id"], "amp": True, "volume": 95, "seq": 0, "ts": 0}
    assert commands[-1]["alert"] is None, "restored after the alert"
    assert b1.commands() == []
    status, done = server.http("GET", f"/api/v1/alerts/{alert['id']}")
    assert done["status"] == "completed"
    assert done["loudspeakers_commanded"] == ["spk-a1"] and done["loudspeakers_acknowledged"] == ["spk-a1"]
    log = [e for e in server.http("GET", "/api/v1/broadcasts?zone=commune-a")[1]["items"] if e["kind"] == "alert"]
    assert log[0]["outcome"] == "completed" and "acknowledged by 1/1 loudspeakers: spk-a1" in log[0]["detail"]
    assert any(e["action"] == "alert.start" for e in server.http("GET", "/api/v1/audit")[1]["items"])


def test_a_programme_pauses_for_the_alert_and_resumes_where_it_was(server: Server, tmp_path: Path) -> None:
    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    t = np.arange(48000 * 6) / 48000
    flac = tmp_path / "prog.flac"
    soundfile.write(str(flac), (0.3 * np.sin(2 * np.pi * 880 * t)).astype(np.float32), 48000, subtype="PCM_16")
    media = server.http("POST", "/api/v1/media?zone=commune-a&title=prog", raw=flac.read_bytes())[1]
    start = server.wall() + 2.0
    body: dict[str, Any] = {"title": "Chương trình", "zones": ["commune-a"], "media": [media["id"]],
                            "start": datetime.fromtimestamp(start, VN).replace(tzinfo=None).isoformat()}
    status, programme = server.http("POST", "/api/v1/programmes", body, who="op-a")
    assert status == 201, programme
    live(server, 4.5, a1)  # the loop, then 2.5 s of the programme
    status, alert = server.http("POST", "/api/v1/alerts", {"title": "Khẩn", "zones": ["commune-a"], "repeat": 1,
                                                             "text": "Thông báo khẩn."})
    assert status == 201
    live(server, 12.0, a1)
    heard = labels(a1.audio())
    assert runs(heard)[:5] == ["loop", "prog", "tone", "speech", "prog"], runs(heard)
    assert abs(heard.count("prog") * 0.25 - 6.0) <= 0.5, "the whole programme, none of it lost to the alert"
    log = [e for e in server.http("GET", "/api/v1/broadcasts?zone=commune-a")[1]["items"]
           if e["kind"] == "scheduled"]
    assert log[0]["outcome"] == "completed" and f"preempted by alert {alert['id']}" in log[0]["detail"]


def test_a_loudspeaker_that_subscribes_during_an_alert_is_commanded_too(server: Server) -> None:
    status, alert = server.http("POST", "/api/v1/alerts", {"title": "Dài", "zones": ["commune-a"],
                                                             "text": "Khẩn.", "repeat": 20})
    assert status == 201
    server.advance(1.0)
    before = server.http("GET", f"/api/v1/alerts/{alert['id']}")[1]
    assert before["status"] == "on_air" and before["loudspeakers_commanded"] == []
    a2 = server.speaker("spk-a2", "ch-a", 40003)
    a2.subscribe()
    live(server, 2.5, a2)
    assert any(c["alert"] == alert["id"] and c["amp"] for c in a2.commands()), "told within the next rounds"
    now = server.http("GET", f"/api/v1/alerts/{alert['id']}")[1]
    assert now["loudspeakers_acknowledged"] == ["spk-a2"]
    status, cancelled = server.http("POST", f"/api/v1/alerts/{alert['id']}/cancel")
    assert status == 200 and cancelled["status"] == "cancelled"
    live(server, 1.0, a2)
    assert a2.commands()[-1]["alert"] is None, "restored after the cancel"
    assert server.app.core.core is not None and alert["id"] not in server.app.core.core.inputs


class StuckPool:
    """A pool whose threads are all busy for good: work given to it waits and never runs."""

    def __init__(self) -> None:
        self.waiting = 0

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N802
        self.waiting += 1


def test_an_alert_is_heard_while_decoding_and_password_pools_are_saturated(server: Server) -> None:
    """Programmes being decoded (their pool), a flood of password checks (the auth pool) and
    whatever else runs in the reactor's default pool take every thread they have; the alert's
    speech is made in its own pool and heard. Were it made in any of them, it would wait
    behind them, here for ever."""
    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    decoding, logins, default = StuckPool(), StuckPool(), StuckPool()
    server.app.programmes._pool = decoding
    server.app.storage.db._pools["auth"] = logins
    server.reactor.pool = default
    media = server.http("POST", "/api/v1/media?zone=commune-a&title=prog", raw=wav_bytes())[1]
    start = datetime.fromtimestamp(server.wall() + 1.0, VN).replace(tzinfo=None).isoformat()
    assert server.http("POST", "/api/v1/programmes", {"title": "Chương trình", "zones": ["commune-a"],
                                                      "media": [media["id"]], "start": start})[0] == 201
    server.app.storage.users.by_password("op-a", "a wrong password")
    live(server, 1.5, a1)
    assert decoding.waiting >= 1 and logins.waiting == 1, "both pools are held"
    status, alert = server.http("POST", "/api/v1/alerts", {"title": "Khẩn", "zones": ["commune-a"], "repeat": 1,
                                                             "text": "Thông báo khẩn."})
    assert status == 201
    live(server, 8.0, a1)
    assert server.tts.spoken == [("Thông báo khẩn.", "vi")]
    assert runs(labels(a1.audio()))[1:3] == ["tone", "speech"], runs(labels(a1.audio()))


def wav_bytes() -> bytes:
    buffer = io.BytesIO()
    t = np.arange(48000 * 3) / 48000
    soundfile.write(buffer, (0.3 * np.sin(2 * np.pi * 880 * t)).astype(np.float32), 48000, format="WAV")
    return buffer.getvalue()
