"""The relay worker against misbehaving and real upstreams on loopback: each limit refuses
with the reason (never a hang), Shoutcast's ICY status line is taken, MPEG-TS and fMP4 HLS
segments decode, and a live playlist that stops changing counts as down."""

from __future__ import annotations

import http.server
import io
import json
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from broadcaster.codecs.pcm import dominant_frequency
from broadcaster.relay.fetch import Limits, RelayRefused, UpstreamError, url_problem
from broadcaster.relay.worker import Relay, Settings

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
LOOPBACK = Limits(allow_private=True, connect_timeout_s=5, read_timeout_s=5, max_playlist_bytes=64 * 1024,
                  max_segment_bytes=256 * 1024)


class Frames(io.RawIOBase):
    """The worker's stdout, kept: audio and events."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b: Any) -> int:
        self.data += bytes(b)
        return len(b)

    def parsed(self) -> tuple[np.ndarray, list[dict[str, Any]]]:
        audio, events, at = [], [], 0
        while at < len(self.data):
            kind, length = struct.unpack_from(">cI", self.data, at)
            payload = bytes(self.data[at + 5:at + 5 + length])
            at += 5 + length
            if kind == b"A":
                audio.append(np.frombuffer(payload, dtype=np.float32))
            else:
                events.append(json.loads(payload))
        return (np.concatenate(audio) if audio else np.zeros(0, np.float32)), events


def relay_for(url: str, limits: Limits = LOOPBACK, **settings: Any) -> tuple[Relay, Frames]:
    out = Frames()
    return Relay(Settings(url=url, limits=limits, **settings), out), out


def pushed(relay: Relay) -> np.ndarray:
    """What the worker decoded into its playout buffer."""
    chunks = list(relay.pacer._chunks)  # noqa: SLF001  # the test reads the buffer it fills
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[http.server.BaseHTTPRequestHandler], None]], str]]:
    """serve(handle) -> base URL of a loopback HTTP server answering every GET with handle(request)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(handle: Callable[[http.server.BaseHTTPRequestHandler], None]) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                try:
                    handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def answer(request: http.server.BaseHTTPRequestHandler, body: bytes, ctype: str, **headers: str) -> None:
    request.send_response(200)
    request.send_header("Content-Type", ctype)
    request.send_header("Content-Length", str(len(body)))
    for name, value in headers.items():
        request.send_header(name.replace("_", "-"), value)
    request.end_headers()
    request.wfile.write(body)


def hls_files(directory: Path, kind: str = "mpegts") -> Path:
    """A finished 3-segment HLS rendition of a 660 Hz tone, made by ffmpeg; returns the playlist."""
    directory.mkdir()
    extra = ["-hls_segment_type", "fmp4"] if kind == "fmp4" else []
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "sine=frequency=660:duration=3",
                    "-c:a", "aac", "-b:a", "64k", "-f", "hls", "-hls_time", "1", "-hls_list_size", "0", *extra,
                    str(directory / "live.m3u8")], check=True, timeout=60)
    return directory / "live.m3u8"


def files(directory: Path, live: bool) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    def handle(request: http.server.BaseHTTPRequestHandler) -> None:
        path = directory / request.path.lstrip("/")
        if not path.is_file():
            request.send_error(404)
            return
        body = path.read_bytes()
        if path.suffix == ".m3u8" and live:
            body = body.replace(b"#EXT-X-ENDLIST\n", b"")  # as if the station were still on air
        answer(request, body, "application/vnd.apple.mpegurl" if path.suffix == ".m3u8" else "video/mp2t")
    return handle


def test_endless_redirects_are_refused(serve: Any) -> None:
    def handle(request: http.server.BaseHTTPRequestHandler) -> None:
        request.send_response(302)
        request.send_header("Location", request.path + "x")
        request.send_header("Content-Length", "0")
        request.end_headers()
    relay, _ = relay_for(serve(handle) + "/a")
    with pytest.raises(RelayRefused, match="more than 5 redirects"):
        relay.once()


def test_a_playlist_that_never_ends_is_refused(serve: Any) -> None:
    def handle(request: http.server.BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "application/vnd.apple.mpegurl")
        request.end_headers()
        request.wfile.write(b"#EXTM3U\n")
        for _ in range(100_000):  # bounded, but far past any limit
            request.wfile.write(b"#EXT-X-PROGRAM-DATE-TIME:2026-12-02T05:00:00Z\n")
    relay, _ = relay_for(serve(handle) + "/playlist.m3u8")
    with pytest.raises(RelayRefused, match="over the limit"):
        relay.once()


def test_a_huge_segment_is_refused_by_its_length_and_without_one(serve: Any) -> None:
    playlist = b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nhuge.ts\n"

    def declared(request: http.server.BaseHTTPRequestHandler) -> None:
        if request.path.endswith(".m3u8"):
            answer(request, playlist, "application/x-mpegurl")
            return
        request.send_response(200)
        request.send_header("Content-Length", str(10**9))
        request.end_headers()

    def undeclared(request: http.server.BaseHTTPRequestHandler) -> None:
        if request.path.endswith(".m3u8"):
            answer(request, playlist, "application/x-mpegurl")
            return
        request.send_response(200)
        request.end_headers()
        for _ in range(1000):
            request.wfile.write(b"\x47" * 4096)

    for handle in (declared, undeclared):
        relay, _ = relay_for(serve(handle) + "/p.m3u8")
        with pytest.raises(RelayRefused, match="a segment .* over the limit"):
            relay.once()


def test_compressed_bodies_are_refused(serve: Any) -> None:
    relay, _ = relay_for(serve(lambda r: answer(r, b"\x1f\x8b" + bytes(100), "audio/mpeg",
                                                Content_Encoding="gzip")) + "/s.mp3")
    with pytest.raises(RelayRefused, match="gzip"):
        relay.once()


def test_not_audio_is_refused(serve: Any) -> None:
    relay, _ = relay_for(serve(lambda r: answer(r, b"<html>" + b"x" * 8000, "text/html")) + "/")
    with pytest.raises(RelayRefused, match="text/html"):
        relay.once()


def test_private_addresses_are_refused_unless_allowed(serve: Any) -> None:
    url = serve(lambda r: answer(r, b"", "audio/mpeg")) + "/s.mp3"
    relay, _ = relay_for(url, Limits(allow_private=False))
    with pytest.raises(RelayRefused, match="not a public address"):
        relay.once()
    assert url_problem(url, allow_private=False) and url_problem(url, allow_private=True) is None
    assert url_problem("http://[fe80::1]/x", allow_private=False)
    assert url_problem("http://example.org/x", allow_private=False) is None


def test_an_upstream_that_refuses_connections_is_down_not_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    relay, _ = relay_for(f"http://127.0.0.1:{port}/s.mp3")
    with pytest.raises(UpstreamError):
        relay.once()


def test_shoutcast_icy_status_line_and_mp3_mid_frame(tmp_path: Path) -> None:
    mp3 = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "sine=frequency=660:duration=2",
                          "-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3", "-"], capture_output=True, check=True,
                         timeout=60).stdout
    listener = socket.create_server(("127.0.0.1", 0))

    def shoutcast() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(4096)
            # Shoutcast v1 answers "ICY 200 OK"; a listener joins at any byte, here mid-frame.
            connection.sendall(b"ICY 200 OK\r\nicy-name:VOV1\r\ncontent-type:audio/mpeg\r\n\r\n" + mp3[1001:])

    threading.Thread(target=shoutcast, daemon=True).start()
    relay, out = relay_for(f"http://127.0.0.1:{listener.getsockname()[1]}/;stream.mp3")
    relay.once()  # the stream ends: once returns
    listener.close()
    audio = pushed(relay)
    assert audio.size > 48000 and abs(dominant_frequency(audio) - 660) < 3
    assert out.parsed()[1][0]["event"] == "up"


@pytest.mark.parametrize("kind", ["mpegts", "fmp4"])
def test_hls_segments_decode_and_a_stale_live_playlist_is_down(tmp_path: Path, serve: Any, kind: str) -> None:
    playlist = hls_files(tmp_path / "hls", kind)
    relay, _ = relay_for(serve(files(playlist.parent, live=True)) + "/live.m3u8", stale_after_s=1.0)
    with pytest.raises(UpstreamError, match="no new segment"):
        relay.once()
    audio = pushed(relay)
    assert audio.size >= 2 * 48000, "three segments from the live edge were decoded"
    assert abs(dominant_frequency(audio) - 660) < 3
    edges = np.abs(np.diff(audio[48000:-48000]))
    assert float(edges.max()) < 0.05, "no click where one segment ends and the next begins"


def test_an_ended_playlist_plays_to_its_end(tmp_path: Path, serve: Any) -> None:
    playlist = hls_files(tmp_path / "hls")
    relay, _ = relay_for(serve(files(playlist.parent, live=False)) + "/live.m3u8")
    relay.once()
    assert pushed(relay).size >= int(2.9 * 48000)


def test_a_trickled_playlist_is_given_up_on_not_waited_for(serve: Any) -> None:
    def handle(request: http.server.BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "application/vnd.apple.mpegurl")
        request.end_headers()
        request.wfile.write(b"#EXTM3U\n" + b"#" * 5000)  # past the sniffing, then a byte at a time
        request.wfile.flush()
        for _ in range(40):  # each byte well inside the read timeout, the whole far past the deadline
            time.sleep(0.1)
            request.wfile.write(b"#")
            request.wfile.flush()
    limits = Limits(allow_private=True, read_timeout_s=5, max_fetch_s=1.0)
    relay, _ = relay_for(serve(handle) + "/p.m3u8", limits)
    with pytest.raises(UpstreamError, match="took longer than 1 s"):
        relay.once()


def play_for(relay: Relay, seconds: float) -> None:
    """Run an endless stream's fetch for ``seconds``, then stop it as control would."""
    def stop() -> None:
        time.sleep(seconds)
        relay.stopping.set()
    threading.Thread(target=stop, daemon=True).start()
    relay.once()


def test_aac_adts_stream_joined_mid_frame(serve: Any) -> None:
    adts = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "sine=frequency=660:duration=3",
                           "-c:a", "aac", "-b:a", "64k", "-f", "adts", "-"], capture_output=True, check=True,
                          timeout=60).stdout
    relay, _ = relay_for(serve(lambda r: answer(r, adts[777:], "audio/aac")) + "/aac")
    relay.once()
    audio = pushed(relay)
    assert audio.size > 2 * 48000 and abs(dominant_frequency(audio) - 660) < 3


@pytest.mark.skipif(shutil.which("icecast2") is None, reason="icecast2 is not installed (make test installs it)")
def test_icecast_ogg_opus_mount() -> None:
    from benchmarks.common import icecast_peer

    with icecast_peer(5) as (_, port):
        relay, out = relay_for(f"http://127.0.0.1:{port}/ch-0.ogg")
        play_for(relay, 3.0)
    audio = pushed(relay)
    assert audio.size > 48000 and abs(dominant_frequency(audio) - 440) < 3
    assert [e["event"] for e in out.parsed()[1]][:1] == ["up"]


def test_addresses_that_tunnel_to_the_lan_are_not_public() -> None:
    for url in ("http://[64:ff9b::a00:1]/x", "http://[2002:7f00:1::]/x", "http://[::ffff:10.0.0.1]/x",
                "http://[64:ff9b:1::a00:1]/x", "http://0.0.0.0/x", "http://169.254.169.254/latest"):
        assert url_problem(url, allow_private=False), url
    assert url_problem("http://[2001:4860:4860::8888]/x", allow_private=False) is None


def test_an_upstream_faster_than_real_time_waits_instead_of_being_dropped(tmp_path: Path, serve: Any) -> None:
    mp3 = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "sine=frequency=660:duration=20",
                          "-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3", "-"], capture_output=True, check=True,
                         timeout=60).stdout
    relay, _ = relay_for(serve(lambda r: answer(r, mp3, "audio/mpeg")) + "/file.mp3", max_buffer_s=5.0)
    fetching = threading.Thread(target=relay.once, daemon=True)
    fetching.start()
    fetching.join(3.0)
    assert fetching.is_alive(), "the fetch waits while the buffer is full"
    assert relay.pacer.dropped == 0 and relay.pacer.depth_s <= 5.0
    relay.stopping.set()
    fetching.join(5.0)
