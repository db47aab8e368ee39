"""/admin/* on the whole server in memory: Icecast's commands on our users and zones, its
document and error shapes, titles reaching /channels and the Ogg stream, and guesses held
back before any password check."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from broadcaster import metrics
from broadcaster.codecs.ogg import OggReader, parse_opus_tags
from tests.integration.memory import Server

PASSWORD = "mật-khẩu-123"


@pytest.fixture
def server(tmp_path: Path) -> Server:
    running = Server(tmp_path)
    users = running.app.storage.users
    users.add_sync("boss", "admin", [], PASSWORD)
    users.add_sync("op-a1", "operator", ["commune-a"], PASSWORD)
    users.add_sync("viewer-a", "viewer", ["commune-a"], PASSWORD)
    return running


def admin(server: Server, path: str, user: str | None = "boss", password: str = PASSWORD,
          host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    lines = [f"GET {path} HTTP/1.0", "Host: memory", "User-Agent: test-agent"]
    if user is not None:
        lines.append("Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    protocol = server.site.buildProtocol(IPv4Address("TCP", host, 50001))
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 50001))
    protocol.makeConnection(transport)
    protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
    for _ in range(20):
        if transport.disconnecting:
            break
        server.reactor.advance(0)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def ogg_title(server: Server, channel: str) -> str:
    reader = OggReader()
    reader.feed(server.app.channels[channel].header_pages)
    tags = [parse_opus_tags(p)[1] for p, _ in reader.packets() if p.startswith(b"OpusTags")]
    return tags[0][0]


def test_stats_has_icecast_shape_and_shows_only_what_the_user_may_read(server: Server) -> None:
    status, headers, body = admin(server, "/admin/stats")
    assert status == 200 and headers["content-type"].startswith("text/xml")
    root = ET.fromstring(body)
    assert root.tag == "icestats"
    assert {"admin", "host", "listeners", "server_id", "server_start", "sources", "source_client_connections"} <= {
        e.tag for e in root}
    mounts = [s.get("mount") for s in root.findall("source")]
    assert mounts == ["/ch-a.ogg", "/ch-b.ogg"]
    source = root.find("source")
    assert source is not None and source.findtext("server_name") == "Kênh A", "non-ASCII survives as references"
    assert b"K&#xEA;nh A" in body or b"K&#234;nh A" in body
    _, _, mine = admin(server, "/admin/stats", "viewer-a")
    assert [s.get("mount") for s in ET.fromstring(mine).findall("source")] == ["/ch-a.ogg"]
    assert admin(server, "/admin/stats?mount=/ch-b.ogg", "viewer-a")[0] == 403


def test_unauthenticated_and_wrong_users_are_refused_as_icecast_refuses(server: Server) -> None:
    status, headers, body = admin(server, "/admin/stats", None)
    assert status == 401 and headers["www-authenticate"].startswith("Basic") and body.startswith(b"You need to")
    assert admin(server, "/admin/stats", "boss", "wrong")[0] == 401
    status, headers, body = admin(server, "/admin/bogus")
    assert status == 400 and b"Unrecognised command" in body and headers["content-type"].startswith("text/html")
    status, _, body = admin(server, "/admin/listclients?mount=/nope.ogg")
    assert status == 400 and b"Source does not exist" in body and b"/nope.ogg" in body
    assert admin(server, "/admin/listclients")[0] == 400
    # metadata needs the right to go live on the channel's zone
    song = "/admin/metadata?mode=updinfo&song=x&mount="
    assert admin(server, song + "/ch-b.ogg", "op-a1")[0] == 403
    assert admin(server, song + "/ch-a.ogg", "viewer-a")[0] == 403
    assert admin(server, song + "/ch-a.ogg", "op-a1")[0] == 200
    assert admin(server, "/admin/killsource?mount=/ch-b", "op-a1")[0] == 403


def test_metadata_sets_the_title_everywhere_and_is_bounded(server: Server) -> None:
    before = metrics.title_updates_total.labels("ch-a")._value.get()
    song = quote("Bản tin sáng – Xã An Bình")
    for mount in ("/ch-a.ogg", "/ingest/ch-a", "/ch-a"):
        status, headers, body = admin(server, f"/admin/metadata?mount={mount}&mode=updinfo&song={song}", "op-a1")
        assert status == 200, body
        root = ET.fromstring(body)
        assert root.tag == "iceresponse" and root.findtext("message") == "Metadata update successful"
        assert root.findtext("return") == "1"
    assert metrics.title_updates_total.labels("ch-a")._value.get() == before + 1, "the same title again: no change"
    server.advance(1.5)  # the chain starts at the next page boundary
    channels = {c["id"]: c for c in server.http("GET", "/channels")[1]}
    assert channels["ch-a"]["title"] == "Bản tin sáng – Xã An Bình" and channels["ch-b"]["title"] is None
    assert server.http("GET", "/api/v1/channels/ch-a")[1]["title"] == "Bản tin sáng – Xã An Bình"
    assert ogg_title(server, "ch-a") == "TITLE=Bản tin sáng – Xã An Bình"
    _, _, stats = admin(server, "/admin/stats?mount=/ch-a.ogg")
    assert ET.fromstring(stats).findtext("source/title") == "Bản tin sáng – Xã An Bình"
    # title= and artist=, Latin-1 when the client says so, control characters and length bounded
    status, _, body = admin(server, "/admin/metadata?mount=/ch-a.ogg&mode=updinfo&title=Caf%E9&artist=Nam"
                            "&charset=ISO-8859-1")
    assert status == 200, body
    assert server.app.channels["ch-a"].title == "Nam - Café", "decoded as Latin-1, as the client said"
    admin(server, "/admin/metadata?mount=/ch-a.ogg&mode=updinfo&song=Caf%E9")
    assert server.app.channels["ch-a"].title == "Café", "not UTF-8 and no charset: Latin-1"
    status, _, body = admin(server, "/admin/metadata?mount=/ch-a.ogg&mode=updinfo&song=x&charset=klingon")
    assert status == 400 and b"charset" in body
    admin(server, "/admin/metadata?mount=/ch-a.ogg&mode=updinfo&song=" + quote("a\r\nb" + "ơ" * 600))
    title = server.app.channels["ch-a"].title
    assert title is not None and title.startswith("a b") and len(title.encode()) <= 512
    status, _, body = admin(server, "/admin/metadata?mount=/ch-a.ogg&mode=nope&song=x")
    assert status == 200 and ET.fromstring(body).findtext("return") == "0"
    admin(server, "/admin/metadata?mount=/ch-a.ogg&mode=updinfo&song=")
    server.advance(1.5)
    assert server.app.channels["ch-a"].title is None and ogg_title(server, "ch-a") == "TITLE=Kênh A"


def test_a_zone_mount_names_the_zone_s_channels(server: Server) -> None:
    assert admin(server, "/admin/metadata?mount=/ingest/zone/commune-b&mode=updinfo&song=x", "op-a1")[0] == 403
    status, _, body = admin(server, "/admin/metadata?mount=/ingest/zone/commune-a&mode=updinfo&song=Chung", "op-a1")
    assert status == 200, body
    assert server.app.channels["ch-a"].title == "Chung" and server.app.channels["ch-b"].title is None
    assert admin(server, "/admin/metadata?mount=/ingest/zone/nowhere&mode=updinfo&song=x")[0] == 400
    status, _, body = admin(server, "/admin/stats?mount=/ingest/zone/province")
    assert [s.get("mount") for s in ET.fromstring(body).findall("source")] == ["/ch-a.ogg", "/ch-b.ogg"]


def test_listclients_lists_a_listener_and_its_agent_whatever_it_sent(server: Server) -> None:
    protocol = server.site.buildProtocol(IPv4Address("TCP", "127.0.0.7", 50002))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.7", 50002))
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET /ch-a.ogg HTTP/1.0\r\nHost: memory\r\nUser-Agent: odd\x01<radio>&\r\n\r\n")
    server.advance(0.1)
    assert transport.value().startswith(b"HTTP/1.0 200")
    server.advance(2.0)
    status, _, body = admin(server, "/admin/listclients?mount=/ch-a", "op-a1")
    source = ET.fromstring(body).find("source")
    assert status == 200 and source is not None and source.get("mount") == "/ch-a"
    assert source.findtext("Listeners") == "1"
    assert source.findtext("listener/IP") == "127.0.0.7" and source.findtext("listener/UserAgent") == "odd<radio>&"
    assert int(source.findtext("listener/Connected") or -1) >= 0 and int(source.findtext("listener/ID") or 0) > 0
    protocol.connectionLost(Failure(ConnectionDone()))
    assert server.app.channels["ch-a"].joined == {}


def test_listclients_and_killsource_without_a_studio(server: Server) -> None:
    status, _, body = admin(server, "/admin/listclients?mount=/ch-a.ogg", "op-a1")
    root = ET.fromstring(body)
    assert status == 200 and root.find("source").get("mount") == "/ch-a.ogg"  # type: ignore[union-attr]
    assert root.findtext("source/Listeners") == "0"
    status, _, body = admin(server, "/admin/killsource?mount=/ch-a.ogg", "op-a1")
    assert status == 400 and b"Source does not exist" in body and b"no studio is live" in body


def test_guesses_are_held_back_before_any_password_check(server: Server) -> None:
    checks = []
    users = server.app.storage.users
    real = users.by_password

    def counting(name: str, password: str):  # type: ignore[no-untyped-def]
        checks.append(name)
        return real(name, password)

    users.by_password = counting  # type: ignore[method-assign]
    codes = [admin(server, "/admin/stats", "boss", f"guess-{i}", host="10.0.0.9")[0] for i in range(15)]
    assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
    assert len(checks) == 10, "past the limit no password is checked"
    status, headers, _ = admin(server, "/admin/stats", "boss", PASSWORD, host="10.0.0.9")
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert admin(server, "/admin/stats", None, host="10.0.0.9")[0] == 401
    assert len(checks) == 10, "no credentials: no check"
    assert admin(server, "/admin/stats", "boss", PASSWORD, host="10.0.0.10")[0] == 200
    # the studio ingest keeps the same record: the address guessing here is held back there too
    checked = len(checks)
    protocol = server.site.buildProtocol(IPv4Address("TCP", "10.0.0.9", 50003))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 50003))
    protocol.makeConnection(transport)
    credentials = base64.b64encode(f"op-a1:{PASSWORD}".encode()).decode()
    protocol.dataReceived(f"SOURCE /ingest/ch-a HTTP/1.0\r\nAuthorization: Basic {credentials}\r\n"
                          "Content-Type: audio/ogg\r\n\r\n".encode())
    server.advance(0.1)
    assert transport.value().split(b"\r\n", 1)[0].split()[1] == b"429" and len(checks) == checked
