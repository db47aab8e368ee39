"""HLS and MP3 through the whole server in memory, on a fake clock: who may have them, a cold
playlist answered once its first segment exists, the core told to encode for a tap alone
(keep_burst off), the encoder stopped after idle_s, and a slow MP3 listener dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from broadcaster import metrics
from tests.integration.memory import Server


class Client:
    """One HTTP/1.0 request held open while the fake clock moves."""

    def __init__(self, server: Server, path: str, headers: tuple[str, ...] = ()) -> None:
        self.protocol = server.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50001))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50001))
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived("\r\n".join((f"GET {path} HTTP/1.0", "Host: memory", *headers)).encode()
                                   + b"\r\n\r\n")

    def response(self) -> tuple[int, dict[str, str], bytes]:
        head, _, body = self.transport.value().partition(b"\r\n\r\n")
        if not head:
            return 0, {}, b""
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split(" ")[1]), headers, body


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)

    def patch(doc: dict[str, Any]) -> None:
        doc["channels"][1]["public"] = False
        doc["http"] = {"keep_burst": False}
        doc["hls"] = {"segment_s": 2, "window": 3, "idle_s": 5, "first_segment_wait_s": 8}

    return Server(tmp_path, patch)


def test_a_channel_not_public_has_no_hls_and_no_mp3(server: Server) -> None:
    for path in ("/channels/ch-b/hls/index.m3u8", "/channels/ch-b.m3u8", "/ch-b.m3u8", "/ch-b.mp3",
                 "/channels/ch-b.mp3"):
        status, body = server.http("GET", path, who=None)
        assert status == 403 and body["error"]["code"] == "not_public", path
    assert server.app.channels["ch-b"].taps == set(), "nothing was started for a refused request"


def test_cold_playlist_waits_for_its_first_segment_then_idles_out(server: Server) -> None:
    view = server.app.channels["ch-a"]
    client = Client(server, "/channels/ch-a/hls/index.m3u8")
    assert len(view.taps) == 1, "the request started the channel's encoder"
    assert client.response()[0] == 0, "no segment yet: the request waits"
    server.advance(3.5)  # pages come a second apart; 2 s of AAC makes the first segment
    status, headers, body = client.response()
    assert status == 200 and headers["content-type"] == "application/vnd.apple.mpegurl"
    assert headers["cache-control"] == "no-cache"
    name = body.decode().splitlines()[-1]
    status, segment = server.http("GET", f"/channels/ch-a/hls/{name}", who=None)
    assert status == 200 and segment[:1] == b"\x47"
    second = Client(server, "/ch-a.m3u8")
    server.advance(0.1)
    assert second.response()[0] == 200
    assert len(view.taps) == 1, "one encoder for every HLS client of a channel"
    server.advance(6)
    assert view.taps == set(), "stopped idle_s after the last request"
    assert server.http("GET", f"/channels/ch-a/hls/{name}", who=None)[0] == 404


def test_a_cold_playlist_that_cannot_be_ready_in_time_gets_503(server: Server) -> None:
    server.app.hls.config = server.app.hls.config.__class__(segment_s=2, first_segment_wait_s=0.5)
    client = Client(server, "/channels/ch-a/hls/index.m3u8")
    server.advance(1)
    status, headers, _ = client.response()
    assert status == 503 and headers["retry-after"] == "2" and headers["cache-control"] == "no-store"


def test_a_slow_mp3_listener_is_dropped_and_the_encoder_stops_with_the_last(server: Server) -> None:
    view = server.app.channels["ch-a"]
    dropped = metrics.listeners_dropped_total.labels("ch-a", "slow")
    before = dropped._value.get()
    slow = Client(server, "/ch-a.mp3", ("Icy-MetaData: 1",))
    status, headers, _ = slow.response()
    assert status == 200 and headers["icy-metaint"] == "16000" and headers["content-type"] == "audio/mpeg"
    assert len(view.taps) == 1
    listener = next(iter(server.app.mp3.channels["ch-a"].listeners))
    listener.pauseProducing()  # what twisted does when the socket's send buffer is full
    server.advance(60)  # a minute of 64 kb/s is past the 256 KiB backlog bound
    assert dropped._value.get() == before + 1
    assert server.app.mp3.channels["ch-a"].listeners == set()
    assert view.taps == set(), "no MP3 listener left: no MP3 encoder"


def test_mp3_listeners_get_a_new_title_at_their_next_metadata_block(server: Server) -> None:
    view = server.app.channels["ch-a"]
    listener = Client(server, "/ch-a.mp3", ("Icy-MetaData: 1",))
    plain = Client(server, "/channels/ch-a.mp3")
    server.advance(3)
    view.title = "Bản tin sáng"  # type: ignore[attr-defined]  # what /admin/metadata sets (ChannelView.title)
    server.advance(5)
    assert len(view.taps) == 1 and len(server.app.mp3.channels["ch-a"].listeners) == 2
    _, _, body = listener.response()
    titles, pos = [], 16000
    while pos < len(body):
        size = body[pos] * 16
        titles.append(body[pos + 1:pos + 1 + size].rstrip(b"\0").decode("utf-8"))
        pos += 1 + size + 16000
    assert titles[0] == "StreamTitle='Kênh A';", "no title set yet: the channel's name"
    assert "StreamTitle='Bản tin sáng';" in titles[1:]
    assert set(titles[1:]) <= {"", "StreamTitle='Bản tin sáng';"}
    _, plain_headers, plain_body = plain.response()
    assert "icy-metaint" not in plain_headers and b"StreamTitle" not in plain_body


def test_encoders_past_max_transcoders_are_refused_with_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)

    def patch(doc: dict[str, Any]) -> None:
        doc["http"] = {"keep_burst": False, "max_transcoders": 1}
        doc["hls"] = {"segment_s": 2, "window": 3, "idle_s": 5, "first_segment_wait_s": 8}

    server = Server(tmp_path, patch)
    Client(server, "/ch-a.m3u8")
    assert len(server.app.channels["ch-a"].taps) == 1, "the first encoder starts"
    for path in ("/ch-b.mp3", "/ch-b.m3u8", "/ch-a.mp3"):
        status, headers, body = Client(server, path).response()
        assert status == 503 and b"max_transcoders" in body and headers["retry-after"] == "60", (path, body)
    assert server.app.channels["ch-b"].taps == set(), "nothing started for the refused"
    again = Client(server, "/ch-a.m3u8")
    assert again.response()[0] != 503, "the running encoder serves more requests"
