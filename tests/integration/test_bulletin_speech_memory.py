"""A text bulletin's speech through the whole server in memory (issue 12 item 3 meeting item 1):
read aloud on approval by its language's engine, stored as media and heard at its time; previewed
before approval; refused at approval when its language has no engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from broadcaster.codecs.pcm import SAMPLE_RATE
from tests.integration.memory import Server
from tests.integration.test_alerts_memory import labels, live, runs
from tests.integration.test_bulletins_memory import people, state, write
from tests.integration.test_speech_memory import decode_ogg_opus


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    return people(Server(tmp_path))


def test_a_text_bulletin_is_read_on_approval_stored_as_media_and_heard(server: Server) -> None:
    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    bulletin = write(server, None, at_s=8.0, text="Lịch tiêm chủng tại trạm y tế xã.", language="vi")
    status, ogg = server.http("GET", f"/api/v1/bulletins/{bulletin['id']}/preview", who="chair-a")
    assert status == 200 and ogg[:4] == b"OggS"
    assert decode_ogg_opus(ogg).size == pytest.approx(1.5 * SAMPLE_RATE, abs=960), "FakeTTS: 1.5 s at 300 Hz"

    status, approved = server.http("POST", f"/api/v1/bulletins/{bulletin['id']}/approve", who="chair-a")
    assert status == 200, approved
    assert server.tts.spoken[-1] == ("Lịch tiêm chủng tại trạm y tế xã.", "vi")
    status, item = server.http("GET", f"/api/v1/media/{approved['speech']}", who="op-a")
    assert status == 200 and item["zone"] == "commune-a" and item["duration_s"] == pytest.approx(1.5, abs=0.01)
    assert item["loudness_lufs"] == pytest.approx(-16.0, abs=0.2)
    live(server, 16.0, a1)
    assert runs(labels(a1.audio())) == ["loop", "speech", "loop"], "its speech plays at its time"
    assert state(server, bulletin) in ("scheduled", "played")


def test_a_bulletin_in_a_language_with_no_engine_is_refused_at_approval(server: Server) -> None:
    bulletin = write(server, None, text="ព័ត៌មាន", language="km")
    status, refused = server.http("POST", f"/api/v1/bulletins/{bulletin['id']}/approve", who="chair-a")
    assert status == 409 and refused["error"]["code"] == "no_voice"
    assert "configure tts.engines.km (docs/tts.md)" in refused["error"]["message"]
    assert state(server, bulletin) == "submitted", "not approved, so it never plays as silence"
    assert server.tts.spoken == []
