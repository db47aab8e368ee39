"""HLS and the MP3 stream on the real server, played by clients we did not write.

ffmpeg and GStreamer (hlsdemux) play the live playlist; ffprobe reads a
segment; a raw socket reads the MP3 stream's ICY metadata as a player would;
the metrics show one encoder per channel and kind, started by a request and
stopped when nobody asks. The server runs with ``http.keep_burst`` off, so
these also show that a tap alone makes the core produce the channel's pages.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from broadcaster.codecs.pcm import dominant_frequency, rms_dbfs
from tests.conftest import RunningServer, start_server, wait_until, write_config
from tests.e2e.test_http_stream import metric

FFMPEG, FFPROBE, GST = shutil.which("ffmpeg"), shutil.which("ffprobe"), shutil.which("gst-launch-1.0")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None or FFPROBE is None, reason="ffmpeg is installed by `make test`")
METAINT = 4000
IDLE_S = 3


@pytest.fixture(scope="module")
def hls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    path = write_config(tmp_path_factory.mktemp("hls"), extra={
        "http": {"keep_burst": False},
        "hls": {"segment_s": 2, "window": 3, "idle_s": IDLE_S, "first_segment_wait_s": 15},
        "mp3": {"metaint": METAINT}})
    running = start_server(path)
    yield running
    running.stop()


def decode(url_or_path: str, out: Path, seconds: float) -> np.ndarray:
    result = subprocess.run(
        [str(FFMPEG), "-v", "error", "-nostdin", "-t", str(seconds), "-i", url_or_path,
         "-f", "f32le", "-ac", "1", "-ar", "48000", str(out)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"ffmpeg reported: {result.stderr}"
    return np.fromfile(out, dtype=np.float32)


def assert_tone(audio: np.ndarray, frequency_hz: float, seconds: float) -> None:
    assert audio.size >= seconds * 48000
    steady = audio[12000:]
    assert abs(dominant_frequency(steady) - frequency_hz) < 3.0
    assert abs(rms_dbfs(steady) - (-12.0)) < 1.5


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@needs_ffmpeg
def test_ffmpeg_plays_the_hls_alias_of_a_cold_channel(hls_server: RunningServer, tmp_path: Path) -> None:
    audio = decode(hls_server.url("/ch-a.m3u8"), tmp_path / "heard.raw", 5)
    assert_tone(audio, 440.0, 4.5)


@needs_ffmpeg
def test_playlist_and_segments_have_cache_headers_types_and_cors(hls_server: RunningServer, tmp_path: Path) -> None:
    url = hls_server.url("/channels/ch-b/hls/index.m3u8")
    status, headers, body = fetch(url)
    assert status == 200
    assert headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["Access-Control-Allow-Origin"] == "*"
    lines = body.decode().splitlines()
    assert lines[0] == "#EXTM3U" and "#EXT-X-TARGETDURATION:2" in lines
    segment = urllib.parse.urljoin(url, lines[-1])
    status, headers, data = fetch(segment)
    assert status == 200
    assert headers["Content-Type"] == "video/mp2t"
    assert "immutable" in headers["Cache-Control"] and "max-age=31536000" in headers["Cache-Control"]
    (tmp_path / "seg.ts").write_bytes(data)
    probe = subprocess.run([str(FFPROBE), "-v", "error", "-show_entries", "stream=codec_name,profile,sample_rate",
                            "-of", "default=nw=1", str(tmp_path / "seg.ts")],
                           capture_output=True, text=True, timeout=30)
    assert set(probe.stdout.split()) == {"codec_name=aac", "profile=LC", "sample_rate=48000"}, probe.stderr
    assert_tone(decode(str(tmp_path / "seg.ts"), tmp_path / "seg.raw", 2), 1000.0, 1.5)
    # The aliases name the same segments, relative to where the playlist was asked for.
    for alias in ("/channels/ch-b.m3u8", "/ch-b.m3u8"):
        alias_url = hls_server.url(alias)
        _, _, text = fetch(alias_url)
        assert fetch(urllib.parse.urljoin(alias_url, text.decode().splitlines()[-1]))[0] == 200
    for missing in ("/channels/ch-b/hls/nope-1.ts", "/channels/ch-b/hls/other.txt", "/channels/ch-z/hls/index.m3u8"):
        status, headers, _ = fetch(hls_server.url(missing))
        assert status == 404, missing
    status, headers, _ = fetch(hls_server.url("/channels/ch-b/hls/nope-1.ts"))
    assert headers["Cache-Control"] == "no-store", "a cache must not keep a 404 for a name that may come"


@pytest.mark.skipif(GST is None, reason="gst-launch-1.0 is installed by `make test`")
def test_gstreamer_hlsdemux_plays_the_playlist(hls_server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "gst.raw"
    pipeline = [str(GST), "-q", "-e", "souphttpsrc", f"location={hls_server.url('/channels/ch-b/hls/index.m3u8')}",
                "!", "hlsdemux", "!", "tsdemux", "!", "aacparse", "!", "avdec_aac", "!", "audioconvert", "!",
                "audio/x-raw,format=F32LE,channels=1", "!", "filesink", f"location={out}"]
    process = subprocess.Popen(pipeline, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: out.exists() and out.stat().st_size >= 3 * 48000 * 4, 30), \
            process.stderr.read() if process.poll() is not None and process.stderr else "no audio from hlsdemux"
    finally:
        process.send_signal(signal.SIGINT)  # -e: an EOS, then a clean exit
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert_tone(np.fromfile(out, dtype=np.float32), 1000.0, 2.5)


def test_the_encoder_stops_after_idle_s_and_its_segments_expire(hls_server: RunningServer) -> None:
    url = hls_server.url("/channels/ch-a/hls/index.m3u8")
    first = fetch(url)[2].decode().splitlines()[-1]
    assert metric(hls_server, "broadcaster_transcoders", {"kind": "hls"}) >= 1
    assert metric(hls_server, "broadcaster_hls_segments_total", {"channel": "ch-a"}) >= 1
    assert wait_until(lambda: metric(hls_server, "broadcaster_transcoders", {"kind": "hls"}) == 0)
    assert fetch(urllib.parse.urljoin(url, first))[0] == 404
    # Nobody listens now, and keep_burst is off: the core stops encoding the channel for us.
    assert wait_until(lambda: metric(hls_server, "broadcaster_subscribers",
                                     {"channel": "ch-a", "transport": "http"}) == 0)
    again = fetch(url)[2].decode().splitlines()[-1]
    assert again.split("-")[0] != first.split("-")[0], "a new session: no segment name is ever reused"


def read_icy_response(server: RunningServer, path: str, audio_bytes: int) -> tuple[dict[str, str], bytes]:
    """What a player that asked for metadata receives: the head, then the raw stream (HTTP/1.0)."""
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=20)
    try:
        sock.sendall(f"GET {path} HTTP/1.0\r\nIcy-MetaData: 1\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data) < audio_bytes:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    head, body = data.split(b"\r\n\r\n", 1)
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


@needs_ffmpeg
def test_mp3_stream_with_icy_metadata(hls_server: RunningServer, tmp_path: Path) -> None:
    headers, body = read_icy_response(hls_server, "/ch-b.mp3", 6 * METAINT)
    assert headers["content-type"] == "audio/mpeg"
    assert headers["icy-metaint"] == str(METAINT)
    assert headers["icy-name"].encode("latin-1").decode("utf-8") == "Kênh ch-b"
    audio, blocks, pos = bytearray(), [], 0
    while pos + METAINT < len(body):
        audio += body[pos:pos + METAINT]
        pos += METAINT
        size = body[pos] * 16
        blocks.append(body[pos + 1:pos + 1 + size])
        pos += 1 + size
    assert len(blocks) >= 4
    assert blocks[0].rstrip(b"\0").decode("utf-8") == "StreamTitle='Kênh ch-b';"
    assert all(block == b"" for block in blocks[1:]), "the same title is not sent again"
    (tmp_path / "heard.mp3").write_bytes(bytes(audio))
    assert_tone(decode(str(tmp_path / "heard.mp3"), tmp_path / "heard.raw", 3), 1000.0, 0.5)


@needs_ffmpeg
def test_ffmpeg_plays_the_mp3_stream(hls_server: RunningServer, tmp_path: Path) -> None:
    assert_tone(decode(hls_server.url("/channels/ch-a.mp3"), tmp_path / "mp3.raw", 3), 440.0, 2.5)


def test_two_mp3_listeners_share_one_encoder(hls_server: RunningServer) -> None:
    assert wait_until(lambda: metric(hls_server, "broadcaster_transcoders", {"kind": "mp3"}) == 0)
    with urllib.request.urlopen(hls_server.url("/ch-a.mp3"), timeout=20) as one, \
            urllib.request.urlopen(hls_server.url("/channels/ch-a.mp3"), timeout=20) as two:
        first, second = one.read(4000), two.read(4000)
        assert metric(hls_server, "broadcaster_transcoders", {"kind": "mp3"}) == 1
        assert metric(hls_server, "broadcaster_mp3_listeners", {"channel": "ch-a"}) == 2
        for data in (first, second):
            assert any(data[i] == 0xFF and data[i + 1] & 0xE0 == 0xE0 for i in range(len(data) - 1)), "MP3 sync"
    assert wait_until(lambda: metric(hls_server, "broadcaster_transcoders", {"kind": "mp3"}) == 0)
    assert metric(hls_server, "broadcaster_mp3_listeners", {"channel": "ch-a"}) == 0
    assert metric(hls_server, "broadcaster_transcoded_bytes_sent_total", {"channel": "ch-a", "kind": "mp3"}) >= 8000


@needs_ffmpeg
def test_with_keep_burst_on_too(server: RunningServer) -> None:
    """The default: the channel always encodes, and its Ogg burst gives the first segments."""
    status, _, body = fetch(server.url("/channels/ch-b/hls/index.m3u8"))
    assert status == 200 and "#EXTINF" in body.decode()
    probe = subprocess.run([str(FFPROBE), "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
                            server.url("/ch-b.m3u8")], capture_output=True, text=True, timeout=60)
    assert set(probe.stdout.split()) == {"aac"}, probe.stderr


@needs_ffmpeg
def test_ffmpeg_plays_fmp4_segments(tmp_path: Path) -> None:
    running = start_server(write_config(tmp_path, extra={"hls": {"container": "fmp4", "segment_s": 2}}))
    try:
        url = running.url("/channels/ch-a/hls/index.m3u8")
        lines = fetch(url)[2].decode().splitlines()
        init = next(line for line in lines if line.startswith("#EXT-X-MAP:")).split('"')[1]
        for name in (init, lines[-1]):
            status, headers, data = fetch(urllib.parse.urljoin(url, name))
            assert status == 200 and headers["Content-Type"] == "video/mp4"
            assert data[4:8] == (b"ftyp" if name == init else b"moof")
        assert_tone(decode(running.url("/ch-a.m3u8"), tmp_path / "heard.raw", 4), 440.0, 3.5)
    finally:
        running.stop()
