"""Studio formats told apart by their bytes, and refused before 200: ffmpeg as a console sending each
format we decode (heard on the channel's own listener stream, decoded by ffmpeg), declared types we do not
decode refused with 415 before any audio, an unplayable body after the 200 leaving no trace but one log
line, and liquidsoap 2.1 as a console with track changes (chained Ogg, MP3 between tracks).

Waits are bounded by generous timeouts and never asserted: what is asserted is what was heard, what the
server answered, and what it counted, logged and recorded."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from broadcaster.codecs.pcm import dominant_frequency
from tests.conftest import RunningServer, start_server, tone_file, wait_until, write_config
from tests.e2e.test_http_stream import metric
from tests.e2e.test_studio import live, live_sessions, raw_source, reply

PASSWORD = "studio-pass-1"
PLAYOUT_S = 3.0  # live.max_delay_ms (2.5 s by default) and a margin
LIQUIDSOAP = shutil.which("liquidsoap")

# name: (ffmpeg output options, the decoder's format label, a tone of its own so bursts never mix them up)
CONSOLES = {
    "ogg-opus": (["-c:a", "libopus", "-page_duration", "200000", "-f", "ogg"], "ogg/opus", 600.0),  # as audio/mpeg
    "ogg-vorbis": (["-c:a", "libvorbis", "-f", "ogg", "-content_type", "audio/ogg"], "ogg/vorbis", 700.0),
    "ogg-flac": (["-c:a", "flac", "-f", "ogg", "-content_type", "application/ogg"], "ogg/flac", 800.0),
    "mp3": (["-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3", "-content_type", "audio/mpeg"], "mp3", 900.0),
    "adts-aac": (["-c:a", "aac", "-b:a", "96k", "-f", "adts", "-content_type", "audio/aac"], "aac", 1100.0),
    "webm-opus": (["-c:a", "libopus", "-f", "webm", "-content_type", "audio/webm"], "webm/opus", 1200.0),
    "matroska-opus": (["-c:a", "libopus", "-f", "matroska", "-content_type", "audio/x-matroska"],
                      "matroska/opus", 1300.0),
}


def make_server(tmp_path: Path, target_delay_ms: int = 200) -> RunningServer:
    config = write_config(tmp_path, extra={"live": {"target_delay_ms": target_delay_ms, "stall_timeout_ms": 2500}})
    from broadcaster.config import load_config
    from broadcaster.storage import KeySealer, Storage, seed_from_config

    loaded = load_config(config)
    storage = Storage(loaded.storage.path, KeySealer.from_file(loaded.storage.secret_file))
    try:
        if storage.is_empty():
            seed_from_config(storage, loaded)
        storage.add_user("op-a", "operator", ["commune-a"], PASSWORD)
    finally:
        storage.close()
    return start_server(config)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    """One server for the formats: each console has a tone of its own, so one's audio is never taken for
    another's."""
    tmp_path = tmp_path_factory.mktemp("formats")
    server = make_server(tmp_path)
    yield server, tmp_path
    server.stop()


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    server = make_server(tmp_path)
    yield server, tmp_path
    server.stop()


@pytest.fixture
def buffered_studio(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    """A live buffer of 1.5 s from the start: liquidsoap sends its Ogg pages in bursts (a FLAC page is a
    second of audio), and the jitter buffer's start (0.2 s, growing after each late arrival) would put
    underrun gaps on air that have nothing to do with track changes."""
    server = make_server(tmp_path, target_delay_ms=1500)
    yield server, tmp_path
    server.stop()


def console(server: RunningServer, wav: Path, options: list[str], mount: str = "/ingest/ch-a"
            ) -> subprocess.Popen[str]:
    return subprocess.Popen(["ffmpeg", "-v", "error", "-nostdin", "-re", "-i", str(wav), *options,
                             f"icecast://op-a:{PASSWORD}@127.0.0.1:{server.http_port}{mount}"],
                            stderr=subprocess.PIPE, text=True)


def heard_on_the_channel(server: RunningServer, out: Path) -> np.ndarray:
    """The channel's listener stream, as ffmpeg decodes it: its burst holds the last 10 s on air, and a
    second more comes live. Called once the console has gone: everything it sent has reached the server,
    and a live buffer holds at most live.max_delay_ms (2.5 s), so after PLAYOUT_S all of it has been
    played (a bound, not a guess)."""
    time.sleep(PLAYOUT_S)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", server.url("/channels/ch-a.ogg"), "-t", "11",
                    "-ac", "1", "-ar", "48000", str(out)], check=True, timeout=60)
    audio, _ = soundfile.read(str(out), dtype="float32")
    return np.asarray(audio)


class ChannelRecording:
    """The channel's listener stream recorded by ffmpeg from before the console starts until ``stop``
    (then PLAYOUT_S more, so everything the console sent has played): unlike the burst, it does not
    depend on how long the console took to start and to leave."""

    def __init__(self, server: RunningServer, out: Path) -> None:
        self.out = out
        self.process = subprocess.Popen(["ffmpeg", "-v", "error", "-y", "-i", server.url("/channels/ch-a.ogg"),
                                         "-t", "120", "-ac", "1", "-ar", "48000", str(out)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> np.ndarray:
        time.sleep(PLAYOUT_S)
        self.process.send_signal(signal.SIGINT)  # ffmpeg finishes the file it is writing
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        audio, _ = soundfile.read(str(self.out), dtype="float32")
        return np.asarray(audio)


def windows(audio: np.ndarray, frequency_hz: float) -> list[bool]:
    """Per quarter second: is it this tone, and loud (a -12 dBFS tone, not silence)?"""
    out = []
    for i in range(0, audio.size - 12000 + 1, 12000):
        window = audio[i:i + 12000]
        rms = float(np.sqrt(np.mean(window ** 2)))
        out.append(abs(dominant_frequency(window) - frequency_hz) < 3 and rms > 0.1)
    return out


def log_rows(tmp_path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(f"file:{tmp_path / 'var' / 'broadcaster.db'}?mode=ro", uri=True)
    try:
        return [(str(k), str(o)) for k, o in db.execute("SELECT kind, outcome FROM broadcast_log WHERE kind = 'live'")]
    finally:
        db.close()


def recordings(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "var" / "recordings").rglob("*.ogg"))


@pytest.mark.parametrize("name", list(CONSOLES))
def test_each_format_from_ffmpeg_is_heard_on_the_channel(shared: tuple[RunningServer, Path], name: str) -> None:
    server, tmp_path = shared
    options, fmt, frequency = CONSOLES[name]
    wav = tone_file(tmp_path / f"{name}.wav", frequency, -12.0, 3.0)
    source = console(server, wav, options)
    assert wait_until(lambda: live(server) is not None), "the console goes on air"
    assert source.wait(30) == 0, source.stderr.read() if source.stderr else ""
    assert wait_until(lambda: live(server) is None), "off air once the console has gone"
    audio = heard_on_the_channel(server, tmp_path / f"{name}-heard.wav")
    tone = windows(audio, frequency)
    first, last = tone.index(True), len(tone) - 1 - tone[::-1].index(True)
    assert last - first + 1 >= 10, f"about 3 s of the console's tone on air: {tone}"
    assert all(tone[first:last + 1]), f"no dropout on air: {tone}"
    assert metric(server, "broadcaster_ingest_bytes_total", {"format": fmt}) > 0, "told apart by its bytes"
    assert metric(server, "broadcaster_ingest_decode_errors_total", {"format": fmt}) == 0
    assert metric(server, "broadcaster_ingest_decode_errors_total", {"format": "mp3"}) == 0


def test_declared_types_we_do_not_decode_are_refused_before_200(studio: tuple[RunningServer, Path]) -> None:
    server, tmp_path = studio
    for content_type, named in (("audio/wav", "audio/wav"), ("audio/flac", "audio/flac"),
                                ("video/mp4", "video/mp4"), ("text/plain; charset=utf-8", "text/plain")):
        sock = raw_source(server, "/ingest/ch-a", content_type=content_type)
        answer = reply(sock)  # no audio sent: the answer comes before any
        sock.close()
        assert answer.startswith("HTTP/1.0 415 Unsupported Media Type"), answer
        assert f"{named} is not a format broadcaster decodes: send Ogg (Opus, Vorbis, FLAC), MP3, AAC (ADTS) " \
               "or WebM/Opus" in answer, answer
    # ffmpeg sending raw FLAC as audio/flac is told so, and gives up
    wav = tone_file(tmp_path / "t.wav", 880.0, -12.0, 1.0)
    source = console(server, wav, ["-c:a", "flac", "-f", "flac", "-content_type", "audio/flac"])
    assert source.wait(30) != 0
    assert metric(server, "broadcaster_ingest_refused_total", {"reason": "unsupported_format"}) == 5
    assert live_sessions(server) == 0 and live(server) is None
    assert log_rows(tmp_path) == [] and recordings(tmp_path) == []


def test_an_unplayable_body_ends_its_session_and_the_retry_is_refused_before_200(
        studio: tuple[RunningServer, Path]) -> None:
    """WAV bytes labelled audio/mpeg: accepted (the type is one we decode), then the bytes tell. The session
    ends with one log line and leaves no broadcast-log row and no recording; the same console coming back
    is refused with 415 before 200, naming what it sent last time."""
    server, tmp_path = studio
    wav = tone_file(tmp_path / "t.wav", 880.0, -12.0, 2.0)
    wav_as_mp3 = ["-c:a", "pcm_s16le", "-f", "wav", "-content_type", "audio/mpeg", "-user_agent", "console/1"]
    first = console(server, wav, wav_as_mp3)
    assert first.wait(30) != 0, "the server hung up on it"
    assert metric(server, "broadcaster_ingest_refused_total", {"reason": "unsupported_format"}) == 1
    second = console(server, wav, wav_as_mp3)
    assert second.wait(30) != 0
    stderr = second.stderr.read() if second.stderr else ""
    # ffmpeg says "Server returned 4XX Client Error, but not one of 40{0,1,3,4}"
    assert "4XX" in stderr or "415" in stderr, stderr
    # the same console (type and user agent), as a raw client: the 415 names the format seen
    sock = raw_source(server, "/ingest/ch-a", content_type="audio/mpeg", user_agent="console/1")
    answer = reply(sock)
    sock.close()
    assert answer.startswith("HTTP/1.0 415") and "WAV (audio/wav) is not a format" in answer, answer
    assert "last stream here" in answer, answer
    assert metric(server, "broadcaster_ingest_refused_total", {"reason": "unsupported_format"}) == 3
    assert live_sessions(server) == 0 and live(server) is None
    assert log_rows(tmp_path) == [] and recordings(tmp_path) == []
    # a console sending something playable from the same address goes on air at once, and is the only row
    long_enough = tone_file(tmp_path / "good.wav", 880.0, -12.0, 6.0)  # on air long enough to be seen, loaded
    good = console(server, long_enough, ["-c:a", "libopus", "-f", "ogg", "-content_type", "audio/ogg"])
    assert wait_until(lambda: live(server) is not None)
    assert good.wait(30) == 0
    assert wait_until(lambda: live(server) is None)
    assert wait_until(lambda: log_rows(tmp_path) == [("live", "completed")])
    assert len(recordings(tmp_path)) == 1
    log = server.stop()
    assert log.count("is unplayable") == 1, log


LIQUIDSOAP_SCRIPT = """
settings.init.allow_root.set(true)
settings.log.stdout.set(true)
s = sequence([{tracks}])
output.icecast({encoder}, host="127.0.0.1", port={port}, user="op-a", password="{password}",
               mount="/ingest/ch-a", fallible=true, on_stop=shutdown, s)
"""


@pytest.mark.skipif(LIQUIDSOAP is None, reason="liquidsoap is installed by `make test`")
@pytest.mark.parametrize("encoder, fmt", [("%mp3(id3v2=true)", "mp3"), ("%vorbis", "ogg/vorbis"),
                                          ("%opus", "ogg/opus"), ("%ogg(%flac)", "ogg/flac")])
def test_liquidsoap_track_changes_are_not_damage(buffered_studio: tuple[RunningServer, Path], encoder: str,
                                                fmt: str) -> None:
    """Tracks in a sequence: in Ogg each is a new chained stream (new serial, new headers, an empty
    packet to end the last), in MP3 the frames just go on. The tracks are heard in order with no gap
    between them, and nothing is counted as damage. (A fourth track is there because liquidsoap may
    hang up before its encoder's last page leaves: whether that tail is heard is not the question.)"""
    server, tmp_path = buffered_studio
    tracks = (600.0, 800.0, 1000.0, 1200.0)
    tones = [tone_file(tmp_path / f"track-{f}.wav", f, -12.0, 1.5) for f in tracks]
    script = tmp_path / "console.liq"
    script.write_text(LIQUIDSOAP_SCRIPT.format(
        tracks=", ".join(f'once(single("{t}"))' for t in tones), encoder=encoder, port=server.http_port,
        password=PASSWORD))
    recording = ChannelRecording(server, tmp_path / "heard.wav")
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen([str(LIQUIDSOAP), str(script)], stdout=output, stderr=subprocess.STDOUT,
                                   text=True)
        try:
            assert wait_until(lambda: live(server) is not None), "liquidsoap goes on air"
            process.wait(40)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        output.seek(0)
        said = output.read()
    assert wait_until(lambda: live(server) is None), said[-2000:]
    audio = recording.stop()
    per_tone = {f: windows(audio, f) for f in tracks}
    sequence = [next((f for f in tracks if per_tone[f][i]), 0.0) for i in range(len(per_tone[600.0]))]
    order = [f for i, f in enumerate(sequence) if f and (i == 0 or sequence[i - 1] != f)]
    assert order[:3] == [600.0, 800.0, 1000.0] and len(order) <= 4, f"{sequence}\n{said[-3000:]}"
    for f in (600.0, 800.0, 1000.0):
        assert sequence.count(f) >= 4, f"{f} Hz heard for about 1.5 s: {sequence}"
    first, last = sequence.index(600.0), len(sequence) - 1 - sequence[::-1].index(1000.0)
    underruns = metric(server, "broadcaster_live_underruns_total", {"channel": "ch-a"})
    assert all(sequence[first:last + 1]), f"no gap at the track changes: {sequence}, {underruns} underruns"
    assert metric(server, "broadcaster_ingest_bytes_total", {"format": fmt}) > 0
    assert metric(server, "broadcaster_ingest_decode_errors_total", {"format": fmt}) == 0


def test_a_stream_that_never_gives_audio_is_ended_as_unplayable(studio: tuple[RunningServer, Path]) -> None:
    """Ogg that is only ever headers (a new chain every 100 bytes, never an audio packet): after
    FIRST_AUDIO_BYTES the session ends as unplayable, having put nothing on air."""
    from broadcaster.codecs.ogg import OggOpusWriter
    from broadcaster.control.studio import FIRST_AUDIO_BYTES

    server, tmp_path = studio
    sock = raw_source(server, "/ingest/ch-a")
    assert reply(sock).startswith("HTTP/1.1 100")
    headers = b"".join(OggOpusWriter(serial=i + 1, pre_skip=312, page_samples=960).header_pages
                       for i in range(100))
    sent = 0
    sock.settimeout(10)
    try:
        while sent < 2 * FIRST_AUDIO_BYTES:
            sock.sendall(headers)
            sent += len(headers)
        closed = sock.recv(100) == b""
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    sock.close()
    assert closed and sent > FIRST_AUDIO_BYTES // 2, "the server hung up on it"
    assert wait_until(lambda: metric(server, "broadcaster_ingest_refused_total",
                                     {"reason": "unsupported_format"}) == 1)
    assert metric(server, "broadcaster_ingest_decode_errors_total", {"format": "ogg/opus"}) == 0
    assert live(server) is None and log_rows(tmp_path) == [] and recordings(tmp_path) == []
