"""Studio consoles on air: ffmpeg (a client we did not write) pushes Opus and MP3 to the real server
while the reference loudspeaker listens; refusals for wrong credentials, foreign channels, a second source.

Waits are bounded by generous timeouts and never asserted: what is asserted is what was heard, in order,
and what the server reports (its /channels state and its counters)."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile
from prometheus_client.parser import text_string_to_metric_families

from broadcaster.codecs.pcm import dominant_frequency
from tests.conftest import ROOT, RunningServer, run_speaker, start_server, tone_file, wait_until, write_config
from tests.e2e.test_http_stream import metric

PASSWORD = "studio-pass-1"



def live(server: RunningServer) -> dict[str, Any] | None:
    """ch-a's live session as the server reports it, or None."""
    session: dict[str, Any] | None = server.get_json("/channels")[0]["live"]
    return session


def live_sessions(server: RunningServer) -> float:
    """The broadcaster_live_sessions gauge; fails if the server does not export it at all (a missing metric
    must not read as 0)."""
    for family in text_string_to_metric_families(server.get("/metrics").decode()):
        for sample in family.samples:
            if sample.name == "broadcaster_live_sessions":
                return float(sample.value)
    raise AssertionError("broadcaster_live_sessions is not exported")


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    config = write_config(tmp_path, extra={"live": {"target_delay_ms": 200, "stall_timeout_ms": 2500}})
    for name, zone in (("op-a", "commune-a"), ("op-b", "commune-b")):
        subprocess.run([sys.executable, "-m", "broadcaster", "user", "add", name, "--role", "operator", "--zone", zone,
                        "--password", "-c", str(config)], input=PASSWORD + "\n", text=True, check=True, cwd=ROOT,
                       capture_output=True)
    server = start_server(config)
    yield server, tmp_path
    server.stop()


def ffmpeg_source(server: RunningServer, wav: Path, codec: list[str], fmt: str, mount: str = "/ingest/ch-a",
                  user: str = "op-a") -> subprocess.Popen[str]:
    return subprocess.Popen(["ffmpeg", "-v", "error", "-nostdin", "-re", "-i", str(wav), *codec, "-f", fmt,
                             f"icecast://{user}:{PASSWORD}@127.0.0.1:{server.http_port}{mount}"],
                            stderr=subprocess.PIPE, text=True)


def seconds_of(path: Path) -> list[float]:
    audio, _ = soundfile.read(str(path), dtype="float32")
    return [dominant_frequency(audio[i:i + 24000]) for i in range(0, audio.size - 24000, 24000)]


def listen(server: RunningServer, seconds: float, out: Path) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(run_speaker(server, "spk-1", seconds, out=out)))
    thread.start()
    return thread, result


@pytest.mark.parametrize("codec, fmt", [(["-c:a", "libopus"], "ogg"),
                                        (["-c:a", "libmp3lame", "-ar", "44100"], "mp3"),
                                        (["-c:a", "libvorbis", "-content_type", "audio/ogg"], "ogg")])
def test_studio_goes_on_air_and_the_channel_falls_back_after(studio: tuple[RunningServer, Path],
                                                             codec: list[str], fmt: str) -> None:
    server, tmp_path = studio
    wav = tone_file(tmp_path / "studio.wav", 880.0, -12.0, 4.0)
    heard = tmp_path / "heard.wav"
    thread, stats = listen(server, 11.0, heard)
    assert wait_until(lambda: server.get_json("/healthz")["loudspeakers_online"] == 1)
    time.sleep(1.5)  # let it hear the loop first; what is asserted is the order heard, not this time
    assert live_sessions(server) == 0
    console = ffmpeg_source(server, wav, codec, fmt)
    assert wait_until(lambda: live(server) is not None), "the console goes on air"
    session = live(server)
    assert session is not None and session["by"] == "op-a"
    assert live_sessions(server) == 1
    assert console.wait(30) == 0, console.stderr.read() if console.stderr else ""
    thread.join(40)
    assert stats["acked"] and stats["lost"] == 0, stats
    pitches = [round(f) for f in seconds_of(heard)]
    # loop tone (440), then the studio (880) for about 4 s, then the loop again: in that order.
    first_live = next(i for i, f in enumerate(pitches) if abs(f - 880) < 3)
    last_live = max(i for i, f in enumerate(pitches) if abs(f - 880) < 3)
    assert all(abs(f - 440) < 3 for f in pitches[:first_live - 1])
    assert sum(abs(f - 880) < 3 for f in pitches) >= 6  # half-second windows
    assert all(abs(f - 880) < 3 for f in pitches[first_live + 1:last_live]), f"a dropout on air: {pitches}"
    assert all(abs(f - 440) < 3 for f in pitches[last_live + 2:]) and last_live + 2 < len(pitches)
    recordings = list((tmp_path / "var" / "recordings").rglob("*.ogg"))
    assert len(recordings) == 1
    recorded, rate = soundfile.read(str(recordings[0]), dtype="float32")
    assert rate == 48000 and abs(recorded.size / 48000 - 4.0) < 0.5
    assert abs(dominant_frequency(recorded[4800:-4800]) - 880.0) < 2.0
    assert wait_until(lambda: live(server) is None)
    assert live_sessions(server) == 0
    expected_format = {"libopus": "ogg/opus", "libvorbis": "ogg/vorbis", "libmp3lame": "mp3"}[codec[1]]
    assert metric(server, "broadcaster_ingest_bytes_total", {"format": expected_format}) > 0


def raw_source(server: RunningServer, mount: str, user: str = "op-a", password: str = PASSWORD,
               method: str = "PUT", content_type: str = "audio/ogg", user_agent: str = "") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    agent = f"User-Agent: {user_agent}\r\n" if user_agent else ""
    sock.sendall(f"{method} {mount} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\n{agent}"
                 f"Content-Type: {content_type}\r\nice-name: Bản tin\r\nExpect: 100-continue\r\n\r\n".encode())
    return sock


def reply(sock: socket.socket) -> str:
    """The server's answer: a 100 Continue (then it waits for audio), or a refusal up to its hang-up."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        data += chunk
        if not chunk or data.startswith(b"HTTP/1.1 100") and b"\r\n\r\n" in data:
            return data.decode("utf-8", "replace")


def test_refusals_are_clear_and_counted(studio: tuple[RunningServer, Path]) -> None:
    server, _ = studio
    cases = [("/ingest/ch-a", "op-a", "wrong-password", "401", "unauthenticated"),
             ("/ingest/ch-b", "op-a", PASSWORD, "403", "forbidden"),
             ("/ingest/zone/commune-b", "op-a", PASSWORD, "403", "forbidden"),
             ("/ingest/nope", "op-a", PASSWORD, "404", "unknown_mount"),
             ("/ch-b.mp3", "op-a", PASSWORD, "403", "forbidden"),  # Icecast-style mount names
             ("/nope.ogg", "op-a", PASSWORD, "404", "unknown_mount"),
             ("/a/b.ogg", "op-a", PASSWORD, "404", "unknown_mount")]
    for mount, user, password, status, reason in cases:
        before = metric(server, "broadcaster_ingest_refused_total", {"reason": reason})
        sock = raw_source(server, mount, user, password)
        head = reply(sock)
        sock.close()
        assert head.split(" ")[1] == status, head
        assert metric(server, "broadcaster_ingest_refused_total", {"reason": reason}) == before + 1


def test_second_source_gets_409_and_the_first_stays_on_air(studio: tuple[RunningServer, Path]) -> None:
    server, tmp_path = studio
    wav = tone_file(tmp_path / "studio.wav", 880.0, -12.0, 6.0)
    console = ffmpeg_source(server, wav, ["-c:a", "libopus"], "ogg")
    try:
        assert wait_until(lambda: live(server) is not None), "the first console goes on air"
        second = raw_source(server, "/ch-a.ogg", method="SOURCE")  # Icecast's name for the same channel
        head = reply(second)
        second.close()
        assert head.startswith("HTTP/1.0 409") and "already live" in head, head
        session = live(server)
        assert session is not None and session["by"] == "op-a"
        assert live_sessions(server) == 1, "the refused second source opened no session"
    finally:
        console.wait(30)


def test_legacy_source_method_and_broken_stream_fall_back(studio: tuple[RunningServer, Path]) -> None:
    server, tmp_path = studio
    wav = tone_file(tmp_path / "studio.wav", 880.0, -12.0, 3.0)
    data = (tmp_path / "s.ogg")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", "libopus", str(data)], check=True)
    stream = bytearray(data.read_bytes())
    for i in range(len(stream) // 2, len(stream) // 2 + 300):
        stream[i] ^= 0xA5  # a damaged stretch in the middle
    sock = raw_source(server, "/ingest/ch-a", method="SOURCE")
    assert reply(sock).startswith("HTTP/1.1 100")
    half = len(stream) * 2 // 3
    sock.sendall(bytes(stream[:half]))  # then the console dies mid-page
    assert wait_until(lambda: live(server) is not None), "on air from the first pages"
    sock.close()
    assert wait_until(lambda: live(server) is None), "off air once the console has gone"
    assert live_sessions(server) == 0
    assert metric(server, "broadcaster_ingest_decode_errors_total", {"format": "ogg/opus"}) >= 1
    stats = run_speaker(server, "spk-1", 2.0, out=tmp_path / "after.wav")
    assert stats["acked"] and stats["lost"] == 0
    audio, _ = soundfile.read(str(tmp_path / "after.wav"), dtype="float32")
    assert abs(dominant_frequency(audio[24000:]) - 440.0) < 2.0, "the loop programme is back"


def test_not_audio_is_refused_with_415(studio: tuple[RunningServer, Path]) -> None:
    server, _ = studio
    sock = raw_source(server, "/ingest/ch-a")
    assert reply(sock).startswith("HTTP/1.1 100")
    sock.sendall(b"RIFF\0\0\0\0WAVEfmt " + bytes(4000))
    sock.settimeout(5)
    assert sock.recv(100) == b"", "the server hangs up on a stream it cannot decode"
    sock.close()
    assert metric(server, "broadcaster_ingest_refused_total", {"reason": "unsupported_format"}) == 1
    # The refused stream left nothing on air: no session in the gauge (exported, not merely absent), none
    # in /channels.
    assert wait_until(lambda: live_sessions(server) == 0)
    assert live(server) is None


def test_an_address_that_keeps_guessing_passwords_is_held_back(studio: tuple[RunningServer, Path]) -> None:
    """After ten wrong passwords a minute, an address is answered 429 without a password
    check (a flood costs no scrypt), and a right password then waits its turn too."""
    server, _ = studio
    answers = []
    for _ in range(11):
        sock = raw_source(server, "/ingest/ch-a", password="wrong-guess")
        answers.append(reply(sock).split("\r\n", 1)[0])
        sock.close()
    assert answers[:10] == ["HTTP/1.0 401 Unauthorized"] * 10, answers
    assert answers[10] == "HTTP/1.0 429 Too Many Requests", answers
    sock = raw_source(server, "/ingest/ch-a")  # the right password, same address, within the minute
    assert reply(sock).startswith("HTTP/1.0 429")
    sock.close()
    assert metric(server, "broadcaster_ingest_refused_total", {"reason": "too_many_failures"}) == 2
