"""The whole server in memory on a fake clock: API calls, the core, loudspeakers
and the records, frame by frame, with no port, no thread and no real second."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import soundfile

from broadcaster.core import commands as c
from tests.integration.memory import FRAME, Server

VN = ZoneInfo("Asia/Ho_Chi_Minh")


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    return Server(tmp_path)


def test_loudspeakers_get_their_channel_only_after_proving_their_address(server: Server) -> None:
    a1 = server.speaker("spk-a1", "ch-a", 40001)
    b1 = server.speaker("spk-b1", "ch-b", 40002)
    a1.subscribe()
    b1.subscribe()
    server.advance(0.2)
    ssrc_a = {p.ssrc for p in a1.rtp()}
    ssrc_b = {p.ssrc for p in b1.rtp()}
    assert len(ssrc_a) == 1 and len(ssrc_b) == 1 and ssrc_a != ssrc_b
    assert server.app.channels["ch-a"].ssrc in ssrc_a
    seqs = [p.sequence for p in a1.rtp()]
    assert seqs == [(seqs[0] + i) % 65536 for i in range(len(seqs))], "one packet per frame, none lost"
    status, view = server.http("GET", "/api/v1/loudspeakers/spk-a1")
    assert status == 200 and view["online"] is True and view["address"] == "127.0.0.1:40001"


def test_editing_one_loudspeaker_touches_only_that_one(server: Server) -> None:
    a1, a2 = server.speaker("spk-a1", "ch-a", 40001), server.speaker("spk-a2", "ch-a", 40003)
    a1.subscribe()
    a2.subscribe()
    server.advance(0.1)
    sent = []
    server.app.core.on_event, original = (lambda e: (sent.append(e), original(e))[1]), server.app.core.on_event
    status, _ = server.http("POST", "/api/v1/loudspeakers/spk-a2/rotate-key")
    assert status == 200
    server.advance(0.2)
    before_a1 = len(a1.rtp())
    ended = [e for e in sent if isinstance(e, c.SessionChanged) and e.kind == "end"]
    assert [e.device_id for e in ended] == ["spk-a2"], "a re-keyed device must prove its new key; others stay"
    server.advance(0.2)
    assert len(a1.rtp()) > before_a1


def test_an_alert_is_heard_in_the_next_frame_then_loudspeakers_are_commanded(server: Server) -> None:
    a1, b1 = server.speaker("spk-a1", "ch-a", 40001), server.speaker("spk-b1", "ch-b", 40002)
    a1.subscribe()
    b1.subscribe()
    server.advance(0.5)
    heard_before = len(a1.rtp())
    status, alert = server.http("POST", "/api/v1/alerts", {"title": "Bão", "zones": ["commune-a"],
                                                             "text": "Bão số chín đang vào."})
    assert status == 201, alert
    server.advance(FRAME)
    first = a1.rtp()[heard_before:]
    assert first and any(p.marker for p in first[:2]), "the higher class takes over with the marker bit"
    assert server.tts.spoken == [("Bão số chín đang vào.", "vi")]
    server.advance(0.1)
    commands = a1.commands()
    assert commands and commands[0]["amp"] is True and commands[0]["alert"] == alert["id"]
    assert b1.commands() == [], "no command outside the alert's zones"
    a1.ack(commands[0]["seq"])
    server.advance(0.1)
    status, described = server.http("GET", f"/api/v1/alerts/{alert['id']}")
    assert described["loudspeakers_acknowledged"] == ["spk-a1"]
    assert set(described["first_frame_ms"]) == {"ch-a"}
    assert described["first_frame_ms"]["ch-a"] <= 1000 * FRAME + 1e-6, "within one frame of acceptance"


def test_a_programme_starts_in_the_frame_that_covers_its_time(server: Server, tmp_path: Path) -> None:
    t = np.arange(48000 * 2) / 48000
    flac = tmp_path / "news.flac"
    soundfile.write(str(flac), (0.3 * np.sin(2 * np.pi * 880 * t)).astype(np.float32), 48000, subtype="PCM_16")
    status, media = server.http("POST", "/api/v1/media?zone=commune-a&title=news", raw=flac.read_bytes())
    assert status == 201, media
    sent: list[c.Command] = []
    core_send = server.app.core.send
    server.app.core.send = lambda command: (sent.append(command), core_send(command))[1]  # type: ignore[method-assign]
    start = int(server.wall()) + 30.013
    start_local = datetime.fromtimestamp(start, VN).replace(tzinfo=None).isoformat(timespec="milliseconds")
    status, programme = server.http("POST", "/api/v1/programmes", {
        "title": "Bản tin", "zones": ["commune-a"], "media": [media["id"]], "start": start_local})
    assert status == 201, programme
    server.advance(40.0)
    (added,) = [m for m in sent if isinstance(m, c.AddInput) and m.channels == ("ch-a",) and m.priority == 20]
    assert added.start_at is not None
    assert added.start_at + 1.8e9 == pytest.approx(start, abs=1e-6), "told ahead, on the core's own clock"
    status, log = server.http("GET", "/api/v1/broadcasts")
    (entry,) = [e for e in log["items"] if e["kind"] == "scheduled"]
    assert entry["item"] == "Bản tin" and "offset" not in entry["detail"]
    assert start - FRAME - 1e-3 <= entry["started_at"] <= start + FRAME, "logged in the frame that covers its start"


def test_a_programme_plays_whole_at_its_time_and_clashes_are_named(server: Server, tmp_path: Path) -> None:
    from tests.integration.test_alerts_memory import labels, live, runs

    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    t = np.arange(48000 * 3) / 48000
    flac = tmp_path / "noon.flac"
    soundfile.write(str(flac), (0.3 * np.sin(2 * np.pi * 880 * t)).astype(np.float32), 48000, subtype="PCM_16")
    media = server.http("POST", "/api/v1/media?zone=commune-a&title=noon", raw=flac.read_bytes(), who="op-a")[1]
    start = server.wall() + 4.0
    body = {"title": "Bản tin trưa", "zones": ["commune-a"], "media": [media["id"]],
            "start": datetime.fromtimestamp(start, VN).replace(tzinfo=None).isoformat()}
    status, programme = server.http("POST", "/api/v1/programmes", body, who="op-a")
    assert status == 201, programme
    assert programme["channels"] == ["ch-a"] and abs(programme["duration_s"] - 3.0) < 0.05
    assert len(programme["next"]) == 1
    status, clash = server.http("POST", "/api/v1/programmes", {**body, "title": "Nhạc"}, who="op-a")
    assert status == 409 and clash["error"]["code"] == "clash"
    assert "Bản tin trưa" in clash["error"]["message"] and "ch-a" in clash["error"]["message"]
    status, _ = server.http("POST", "/api/v1/programmes", {**body, "zones": ["commune-b"]}, who="op-a")
    assert status == 403, "an operator of commune A cannot schedule on commune B"
    live(server, 9.0, a1)
    heard = labels(a1.audio())
    assert runs(heard) == ["loop", "prog", "loop"], runs(heard)
    assert abs(heard.count("prog") * 0.25 - 3.0) <= 0.25, "the whole programme, once"
    log = [e for e in server.http("GET", "/api/v1/broadcasts")[1]["items"] if e["kind"] == "scheduled"]
    assert len(log) == 1 and log[0]["item"] == "Bản tin trưa" and log[0]["outcome"] == "completed"
    assert "offset=" not in log[0]["detail"]
    assert start - FRAME - 1e-3 <= log[0]["started_at"] <= start + FRAME, "in the frame that covers its start"


def test_uploads_small_and_spooled_are_both_processed(server: Server, tmp_path: Path) -> None:
    from broadcaster.web.site import SPOOL_BYTES

    sizes = {}
    for seconds in (0.6, 4.0):  # one body kept in memory, one spooled to a named file for the worker
        t = np.arange(int(48000 * seconds)) / 48000
        wav = tmp_path / f"{seconds}.wav"
        soundfile.write(str(wav), (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 48000, subtype="PCM_16")
        body = wav.read_bytes()
        status, media = server.http("POST", f"/api/v1/media?zone=commune-a&title=t{seconds}", raw=body)
        assert status == 201, media
        assert abs(media["duration_s"] - seconds) < 0.01
        sizes[seconds] = len(body)
    assert sizes[0.6] < SPOOL_BYTES <= sizes[4.0]
