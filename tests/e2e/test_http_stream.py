"""The real server on loopback, listened to by ffmpeg (a client we did not write)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broadcaster.codecs.ogg import OggReader, parse_opus_head
from broadcaster.codecs.pcm import dominant_frequency, rms_dbfs
from tests.conftest import RunningServer

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is installed by `make test`")


def metric(server: RunningServer, name: str, labels: dict[str, str] | None = None) -> float:
    text = server.get("/metrics").decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return float(sample.value)
    return 0.0


def test_listening_line_and_channel_list(server: RunningServer) -> None:
    channels = server.get_json("/channels")
    assert [c["id"] for c in channels] == ["ch-a", "ch-b"]
    assert channels[0]["stream"] == "/channels/ch-a.ogg"
    assert server.get_json("/healthz")["status"] == "ok"


@needs_ffmpeg
def test_ffmpeg_decodes_the_http_stream(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "heard.raw"
    result = subprocess.run(
        [str(FFMPEG), "-v", "error", "-nostdin", "-t", "3", "-i", server.url("/channels/ch-a.ogg"),
         "-f", "f32le", "-ac", "1", "-ar", "48000", str(out)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"ffmpeg reported: {result.stderr}"
    audio = np.fromfile(out, dtype=np.float32)
    assert audio.size >= 2.5 * 48000
    steady = audio[24000:]
    assert abs(dominant_frequency(steady) - 440.0) < 2.0
    assert abs(rms_dbfs(steady) - (-12.0)) < 1.5


def test_stream_starts_with_headers_and_icecast_headers(server: RunningServer) -> None:
    with urllib.request.urlopen(server.url("/channels/ch-b.ogg"), timeout=10) as response:
        assert response.headers["Content-Type"] == "audio/ogg"
        assert response.headers["icy-name"] == "Kênh ch-b".encode().decode("latin-1")
        data = response.read(8192)
    reader = OggReader()
    reader.feed(data)
    pages = list(reader.pages())
    assert pages[0].bos and pages[0].sequence == 0
    head = parse_opus_head(pages[0].body)
    assert head["channels"] == 1 and head["input_rate"] == 48000 and head["pre_skip"] == 312
    assert pages[1].body.startswith(b"OpusTags")


def test_burst_gives_a_new_listener_audio_at_once(server: RunningServer) -> None:
    # A first listener keeps the channel running until its burst buffer holds pages.
    with urllib.request.urlopen(server.url("/channels/ch-a.ogg"), timeout=10) as holder:
        holder.read(12000)  # headers plus two 1-second pages: the burst is full
        sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
        sock.sendall(b"GET /channels/ch-a.ogg HTTP/1.0\r\n\r\n")
        sock.settimeout(0.3)
        received = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            pass
        sock.close()
    reader = OggReader()
    reader.feed(received.split(b"\r\n\r\n", 1)[1])
    audio_pages = [p for p in reader.pages() if p.sequence >= 2]
    assert len(audio_pages) >= 1, "recent audio arrives at once, before the next live page"


def test_unknown_channel_and_missing_sdp_are_clear_404s(server: RunningServer) -> None:
    for path, code in (("/channels/nope.ogg", "not_found"), ("/channels/ch-a.sdp", "no_multicast"),
                       ("/nothing", "not_found")):
        with pytest.raises(urllib.error.HTTPError) as info:
            server.get(path)
        assert info.value.code == 404
        assert json.loads(info.value.read())["error"]["code"] == code


def test_metrics_parse_and_move(server: RunningServer) -> None:
    before = metric(server, "broadcaster_frames_encoded_total", {"channel": "ch-a"})
    with urllib.request.urlopen(server.url("/channels/ch-a.ogg"), timeout=10) as response:
        response.read(20000)
    after = metric(server, "broadcaster_frames_encoded_total", {"channel": "ch-a"})
    assert after >= before + 50
    assert metric(server, "broadcaster_tick_lateness_seconds_count") > 0
    assert metric(server, "broadcaster_packets_sent_total", {"channel": "ch-a", "transport": "http"}) >= 1
    names = {f.name for f in text_string_to_metric_families(server.get("/metrics").decode())}
    assert {"broadcaster_encode_seconds", "broadcaster_subscribers", "broadcaster_datagrams_rejected",
            "broadcaster_loudspeakers_online", "broadcaster_send_errors"} <= names


def test_listeners_beyond_the_limit_get_503(tmp_path: Path) -> None:
    from tests.conftest import start_server, write_config

    running = start_server(write_config(tmp_path, extra={"http": {"max_listeners": 1}}))
    try:
        with urllib.request.urlopen(running.url("/channels/ch-a.ogg"), timeout=10) as first:
            first.read(100)
            with pytest.raises(urllib.error.HTTPError) as info:
                running.get("/channels/ch-b.ogg")
            assert info.value.code == 503 and json.loads(info.value.read())["error"]["code"] == "full"
    finally:
        running.stop()
