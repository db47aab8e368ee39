"""Going live over a WebSocket (the webcast protocol), against the real server: a WebM/Opus tone made by
ffmpeg, sent in MediaRecorder-sized chunks by the ``websockets`` client, heard by the reference loudspeaker;
its title from a metadata message; refusals as close codes; off air when the socket closes.

Waits are bounded and never asserted: what is asserted is what was heard, in order, what the server
closed with, and what it reports and counts."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile

from broadcaster.codecs.pcm import dominant_frequency
from broadcaster.protocols import websocket as ws
from tests.conftest import RunningServer, run_speaker, tone_file, wait_until
from tests.e2e.test_http_stream import metric
from tests.e2e.test_studio import live, live_sessions
from tests.e2e.test_studio_formats import PASSWORD, make_server
from tests.e2e.webcast_client import open_webcast, refusal, send_metadata, stream, webm_tone


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    server = make_server(tmp_path)
    yield server, tmp_path
    server.stop()


def url(server: RunningServer, mount: str = "/ingest/ch-a") -> str:
    return f"ws://127.0.0.1:{server.http_port}{mount}"


def title(server: RunningServer) -> str | None:
    sources = server.get_json("/status-json.xsl")["icestats"]["source"]
    for source in sources if isinstance(sources, list) else [sources]:
        if source["listenurl"].endswith("/ch-a.ogg"):
            found: str | None = source.get("title")
            return found
    return None


def test_webcast_goes_on_air_with_its_title_and_off_air_when_it_closes(studio: tuple[RunningServer, Path]) -> None:
    server, tmp_path = studio
    data = webm_tone(tone_file(tmp_path / "studio.wav", 880.0, -12.0, 4.0))
    heard = tmp_path / "heard.wav"
    result: dict[str, Any] = {}
    listener = threading.Thread(target=lambda: result.update(run_speaker(server, "spk-1", 11.0, out=heard)))
    listener.start()
    assert wait_until(lambda: server.get_json("/healthz")["loudspeakers_online"] == 1)
    time.sleep(1.5)  # let it hear the loop first; what is asserted is the order heard, not this time
    client = open_webcast(url(server), "op-a", PASSWORD)
    send_metadata(client, "Bản tin sáng", "UBND xã")
    stream(client, data, 4.0)
    session = live(server)
    assert session is not None and session["by"] == "op-a", "on air while it streams"
    assert live_sessions(server) == 1
    assert title(server) == "UBND xã - Bản tin sáng"
    client.close()
    assert wait_until(lambda: live(server) is None), "off air once the socket closed"
    assert live_sessions(server) == 0
    listener.join(40)
    assert result["acked"] and result["lost"] == 0, result
    audio, _ = soundfile.read(str(heard), dtype="float32")
    pitches = [round(dominant_frequency(audio[i:i + 24000])) for i in range(0, audio.size - 24000, 24000)]
    first_live = next(i for i, f in enumerate(pitches) if abs(f - 880) < 3)
    last_live = max(i for i, f in enumerate(pitches) if abs(f - 880) < 3)
    assert all(abs(f - 440) < 3 for f in pitches[:first_live - 1]), pitches
    assert sum(abs(f - 880) < 3 for f in pitches) >= 6, pitches  # half-second windows
    assert all(abs(f - 880) < 3 for f in pitches[first_live + 1:last_live]), f"a dropout on air: {pitches}"
    assert all(abs(f - 440) < 3 for f in pitches[last_live + 2:]) and last_live + 2 < len(pitches), pitches
    recordings = list((tmp_path / "var" / "recordings").rglob("*.ogg"))
    assert len(recordings) == 1, "recorded as an Icecast studio is"
    recorded, _ = soundfile.read(str(recordings[0]), dtype="float32")
    assert abs(dominant_frequency(recorded[4800:-4800]) - 880.0) < 2.0
    assert metric(server, "broadcaster_ingest_bytes_total", {"format": "webm/opus"}) > 0
    assert metric(server, "broadcaster_title_updates_total", {"channel": "ch-a"}) >= 1


def test_refusals_are_close_codes_and_counted(studio: tuple[RunningServer, Path]) -> None:
    server, tmp_path = studio
    data = webm_tone(tone_file(tmp_path / "studio.wav", 880.0, -12.0, 6.0))
    cases = [("/ingest/ch-a", "op-a", "wrong-password", 4401, "unauthenticated"),
             ("/ingest/ch-a", None, PASSWORD, 4401, "unauthenticated"),  # no user: "source", not a user here
             ("/ingest/ch-b", "op-a", PASSWORD, 4403, "forbidden"),
             ("/ingest/nope", "op-a", PASSWORD, 4404, "unknown_mount")]
    for mount, user, password, code, reason in cases:
        before = metric(server, "broadcaster_ingest_refused_total", {"reason": reason})
        client = open_webcast(url(server, mount), user, password)
        closed = refusal(client)
        assert closed[0] == code, (mount, user, closed)
        assert metric(server, "broadcaster_ingest_refused_total", {"reason": reason}) == before + 1
    bad_format = open_webcast(url(server), "op-a", PASSWORD, mime="audio/wav")
    assert refusal(bad_format)[0] == 4415
    first = open_webcast(url(server, "/ch-a.ogg"), "op-a", PASSWORD)  # an Icecast-style mount name
    sender = threading.Thread(target=stream, args=(first, data, 6.0))
    sender.start()
    try:
        assert wait_until(lambda: live(server) is not None), "the first webcast goes on air"
        second = open_webcast(url(server), "op-a", PASSWORD)
        busy, why = refusal(second)
        assert busy == 4409 and "already live" in why, (busy, why)
        assert live_sessions(server) == 1
    finally:
        sender.join(30)
        first.close()
    assert wait_until(lambda: live(server) is None)


def raw_upgrade(server: RunningServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /ingest/ch-a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Protocol: webcast\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 ") and f"Sec-WebSocket-Accept: {ws.accept_key(key)}".encode() in head
    return sock


def close_from(sock: socket.socket) -> ws.Close | None:
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    closes = [e for e in ws.FrameReader(require_mask=False).feed(data) if isinstance(e, ws.Close)]
    return closes[0] if closes else None


def test_protocol_errors_close_with_1002_and_are_counted(studio: tuple[RunningServer, Path]) -> None:
    server, _ = studio
    before = metric(server, "broadcaster_webcast_rejected_total", {"reason": "unmasked"})
    sock = raw_upgrade(server)
    hello = json.dumps({"type": "hello", "data": {"mime": "audio/webm", "user": "op-a", "password": PASSWORD}})
    sock.sendall(ws.encode_frame(ws.OP_TEXT, hello.encode()))  # unmasked: a client's frames must be masked
    closed = close_from(sock)
    sock.close()
    assert closed is not None and closed.code == 1002, closed
    assert metric(server, "broadcaster_webcast_rejected_total", {"reason": "unmasked"}) == before + 1
    sock = raw_upgrade(server)
    sock.sendall(ws.encode_frame(ws.OP_BINARY, b"audio before the hello", mask=b"abcd"))
    closed = close_from(sock)
    sock.close()
    assert closed is not None and closed.code == 1002 and "hello" in closed.reason, closed
    # An ordinary GET of the same path is still the web's (no upgrade asked): not a webcast.
    assert server.get_json("/healthz")["status"] == "ok"


def test_wrong_passwords_share_the_ingest_limit(studio: tuple[RunningServer, Path]) -> None:
    """The webcast and the Icecast ingest are one login record: ten wrong passwords from an address in a
    minute, then 4429 with no password check (and an Icecast source from there gets 429 too)."""
    server, _ = studio
    codes = [refusal(open_webcast(url(server), "op-a", f"wrong-{i}"))[0] for i in range(11)]
    assert codes[:10] == [4401] * 10 and codes[10] == 4429, codes
    assert metric(server, "broadcaster_ingest_refused_total", {"reason": "too_many_failures"}) >= 1
    from tests.e2e.test_studio import raw_source, reply

    sock = raw_source(server, "/ingest/ch-a")
    assert reply(sock).startswith("HTTP/1.0 429")
    sock.close()
