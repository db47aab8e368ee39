"""Speech for text through the whole server in memory (control/speech.py, api/speech.py): espeak-ng
really reading Vietnamese at the library's loudness, a render stored as a media item that plays like
an upload, the preview route and who may use it, and an alert in a language with no engine."""

from __future__ import annotations

import logging
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from broadcaster import metrics
from broadcaster.codecs.loudness import LoudnessMeter
from broadcaster.codecs.ogg import OggReader, parse_opus_head
from broadcaster.codecs.opus import OpusDecoder
from broadcaster.codecs.pcm import SAMPLE_RATE, dominant_frequency
from broadcaster.config import TtsConfig
from broadcaster.control.speech import TextTooLong
from broadcaster.control.tts import CommandTTS, NoVoice, SpeechError, Voices
from broadcaster.control.workers import Busy
from tests.integration.memory import FakeTTS, Server
from tests.integration.test_alerts_memory import labels, live, runs

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
NEWS = "Bão số chín đang tiến vào đất liền. Đề nghị bà con ven biển khẩn trương sơ tán."


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    server = Server(tmp_path)
    for name, permissions in (("viewer-a", ()), ("editor-a", ("bulletin.create",))):
        server.app.storage.add_user(name, "viewer", ["commune-a"], permissions=permissions)
        server.tokens[name] = server.app.storage.new_token(name)
    return server


def settle(server: Server, deferred: Deferred[Any]) -> Any:
    """The Deferred's result once the memory reactor has run what it queued (pools run at once)."""
    out: list[Any] = []
    deferred.addBoth(out.append)
    for _ in range(20):
        if out:
            break
        server.reactor.advance(0)
    assert out, "never fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def lufs(audio: np.ndarray) -> float:
    meter = LoudnessMeter(SAMPLE_RATE)
    meter.feed(audio)
    return meter.integrated()


def engine_script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return [sys.executable, str(path)]


def renders(engine: str, outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value("broadcaster_speech_renders_total",
                                              {"engine": engine, "outcome": outcome})
    return value or 0.0


@needs_espeak
def test_espeak_reads_vietnamese_at_the_library_loudness(server: Server) -> None:
    server.app.speech.voices = Voices.from_config(TtsConfig())  # the real espeak-ng
    before = renders("espeak-ng", "ok")
    audio = settle(server, server.app.speech.render(NEWS, "vi"))
    assert audio.dtype == np.float32 and audio.size > 3 * SAMPLE_RATE
    loudness, peak = lufs(audio), float(np.max(np.abs(audio)))
    assert peak <= 10 ** (-1 / 20) + 1e-6, "under the peak ceiling"
    # espeak-ng's plosives peak ~18 dB over its loudness: a few dB of look-ahead limiting get it there.
    assert loudness == pytest.approx(-16.0, abs=0.3)
    assert renders("espeak-ng", "ok") == before + 1


def test_a_render_stored_is_a_media_item_that_plays_like_an_upload(server: Server) -> None:
    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    audio = settle(server, server.app.speech.render("Thông báo của xã.", "vi"))  # FakeTTS: 1.5 s at 300 Hz
    assert server.tts.spoken == [("Thông báo của xã.", "vi")]
    row = settle(server, server.app.speech.store(audio, zone="commune-a", title="Thông báo", actor="op-a"))
    stored, rate = soundfile.read(row["path"], dtype="float32")
    assert rate == SAMPLE_RATE and stored.size == audio.size
    assert soundfile.info(row["path"]).format == "FLAC" and row["size_bytes"] == Path(row["path"]).stat().st_size
    assert row["loudness_lufs"] == pytest.approx(-16.0, abs=0.2) and lufs(stored) == pytest.approx(-16.0, abs=0.2)
    status, item = server.http("GET", f"/api/v1/media/{row['id']}", who="op-a")
    assert status == 200 and item["title"] == "Thông báo" and item["uploaded_by"] == "op-a"
    assert item["duration_s"] == pytest.approx(1.5, abs=0.01)

    live(server, 1.0, a1)
    status, alert = server.http("POST", "/api/v1/alerts", {"title": "Thông báo", "zones": ["commune-a"],
                                                            "priority": "uu-tien", "repeat": 1,
                                                            "media": row["id"]})
    assert status == 201, alert
    live(server, 8.0, a1)
    assert runs(labels(a1.audio())) == ["loop", "tone", "speech", "loop"], "the stored speech plays on air"

    with pytest.raises(ValueError, match="no zone 'nowhere'"):
        settle(server, server.app.speech.store(audio, zone="nowhere", title="x", actor="op-a"))


def test_silence_an_unknown_language_too_much_text_and_a_full_queue_are_refused(server: Server,
                                                                                tmp_path: Path) -> None:
    silent = engine_script(tmp_path, "silent", """
    import io, sys, wave
    sys.stdin.read()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(b"\\0\\0" * 32000)
    sys.stdout.buffer.write(buffer.getvalue())
    """)
    speech = server.app.speech
    speech.voices = Voices({"vi": CommandTTS(silent, name="silent"), "en": FakeTTS()})
    with pytest.raises(SpeechError, match="'silent' produced only silence"):
        settle(server, speech.render("Xin chào", "vi"))
    assert renders("silent", "silent") == 1
    with pytest.raises(NoVoice, match="configure tts.engines.km"):
        settle(server, speech.render("សួស្តី", "km"))
    with pytest.raises(TextTooLong, match="tts.max_text_chars"):
        settle(server, speech.render("a" * 5001, "en"))

    held: list[Any] = []

    class Held:  # a pool whose threads are all busy: nothing it is given finishes
        def callInThreadWithCallback(self, *args: Any, **kwargs: Any) -> None:  # noqa: N802
            held.append(args)

    speech._pool = Held()
    waiting = [speech.render("Xin chào", "en") for _ in range(2 + 8)]  # tts.workers + tts.max_waiting
    with pytest.raises(Busy):
        settle(server, speech.render("Xin chào", "en"))
    assert len(held) == 10 and not any(d.called for d in waiting)


def test_an_alert_in_a_language_with_no_engine_plays_its_attention_signal_and_says_why(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    live(server, 1.0, a1)
    with caplog.at_level(logging.ERROR, logger="broadcaster.control.alerts"):
        status, alert = server.http("POST", "/api/v1/alerts", {"title": "Lũ", "zones": ["commune-a"],
                                                                "language": "km", "repeat": 1, "text": "ទឹកជំនន់"})
        live(server, 6.0, a1)
    assert status == 201
    assert server.tts.spoken == [], "no engine was asked to read Khmer"
    assert any("no text-to-speech engine for language 'km'; configure tts.engines.km" in r.getMessage()
               and alert["id"] in r.getMessage() for r in caplog.records)
    heard = runs(labels(a1.audio()))
    assert "tone" in heard and "speech" not in heard, heard


# --- the API ----------------------------------------------------------------------------------------


def decode_ogg_opus(data: bytes) -> np.ndarray:
    reader = OggReader()
    reader.feed(data)
    packets = [packet for packet, _ in reader.packets()]
    head = parse_opus_head(packets[0])
    assert packets[1].startswith(b"OpusTags")
    decoder = OpusDecoder()
    pcm = np.concatenate([decoder.decode(p) for p in packets[2:]])
    return pcm[head["pre_skip"]:]


def test_the_preview_is_ogg_opus_of_the_normalised_speech(server: Server) -> None:
    status, found = server.http("GET", "/api/v1/speech/languages", who="op-a")
    assert status == 200 and found == {"languages": [{"language": "en", "engine": "fake"},
                                                     {"language": "vi", "engine": "fake"}], "max_text_chars": 5000}
    for who in ("admin", "op-a", "editor-a"):
        status, body = server.http("POST", "/api/v1/speech/preview", {"text": "Xin chào bà con.", "language": "vi"},
                                   who=who)
        assert status == 200, (who, body)
        assert body[:4] == b"OggS"
        pcm = decode_ogg_opus(body)
        assert pcm.size == pytest.approx(1.5 * SAMPLE_RATE, abs=960)
        assert dominant_frequency(pcm[4800:-4800]) == pytest.approx(300, abs=3)
        assert lufs(pcm) == pytest.approx(-16.0, abs=1.0), "what will be broadcast: normalised"


def test_preview_refusals(server: Server, tmp_path: Path) -> None:
    text = {"text": "Xin chào.", "language": "vi"}
    status, body = server.http("POST", "/api/v1/speech/preview", text, who=None)
    assert status == 401
    status, body = server.http("POST", "/api/v1/speech/preview", text, who="viewer-a")
    assert status == 403 and "bulletin.create" in body["error"]["message"], body
    assert server.tts.spoken == [], "no synthesis for a caller who may not write bulletins"

    status, body = server.http("POST", "/api/v1/speech/preview", {"text": "សួស្តី", "language": "km"}, who="op-a")
    assert status == 400 and body["error"] == {"code": "no_voice", "message": (
        "no text-to-speech engine for language 'km'; configure tts.engines.km (docs/tts.md)")}
    status, body = server.http("POST", "/api/v1/speech/preview", {"text": "x", "language": "../../etc"}, who="op-a")
    assert status == 400 and body["error"]["code"] == "bad_value" and body["error"]["message"].startswith("language")
    status, body = server.http("POST", "/api/v1/speech/preview", {"text": "ạ" * 5001, "language": "vi"}, who="op-a")
    assert status == 413 and "5001 characters" in body["error"]["message"]
    status, body = server.http("POST", "/api/v1/speech/preview", {"text": "", "language": "vi"}, who="op-a")
    assert status == 400
    assert server.tts.spoken == []

    failing = engine_script(tmp_path, "failing", """
    import sys
    sys.stdin.read()
    sys.exit("voice model /opt/piper/vi_VN-vais1000-medium.onnx: no such file")
    """)
    server.app.speech.voices = Voices({"vi": CommandTTS(failing, name="piper")})
    status, body = server.http("POST", "/api/v1/speech/preview", text, who="op-a")
    assert status == 422 and body["error"]["code"] == "speech_failed"
    assert body["error"]["message"] == ("text-to-speech engine 'piper' exited with status 1: voice model "
                                        "/opt/piper/vi_VN-vais1000-medium.onnx: no such file")


def test_a_busy_speech_pool_is_a_503_with_retry_after(server: Server) -> None:
    class Held:
        def callInThreadWithCallback(self, *args: Any, **kwargs: Any) -> None:  # noqa: N802
            pass

    server.app.speech._pool = Held()
    server.app.speech.in_flight = 10
    data = b'{"text": "Xin ch\\u00e0o", "language": "vi"}'
    status, body = server.http("POST", "/api/v1/speech/preview", raw=data, who="op-a")
    assert status == 503 and body["error"]["code"] == "busy"
